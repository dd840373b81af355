import { InvalidBatchError, MissingContextError } from '../errors.js';
import { checkCompanion } from '../math/simplex.js';
import type { DefenseContext, ProbBatch } from '../types.js';

/** What a gradient defense (MAD, GRAD²) reads of its context: the Gram matrices (jacobian=full) or the surrogate's probabilities (last layer). */
export interface GradientInputs {
  gram?: ArrayLike<number>;
  surrogate?: Float32Array;
}

export function gradientInputs(defense: string, full: boolean, input: ProbBatch, ctx: DefenseContext): GradientInputs {
  const { rows, cols } = input;
  if (full) {
    if (!ctx.gram) throw new MissingContextError(`${defense} with jacobian=full needs the surrogate’s Gram matrices`);
    if (ctx.gram.length !== rows * cols * cols) {
      throw new InvalidBatchError(`Gram matrices hold ${ctx.gram.length} values, expected ${rows}×${cols}×${cols}`);
    }
    return { gram: ctx.gram };
  }
  if (!ctx.surrogateProbs) throw new MissingContextError(`${defense} needs the surrogate’s probabilities (surrogateProbs)`);
  return { surrogate: checkCompanion(ctx.surrogateProbs, input, 'surrogate probabilities').data };
}
