/**
 * Prepares a defense's context: exactly the fields its `needs` ask for, nothing more. The one place
 * the serving layer, the `perturb` command and the evaluation use, so they agree on what each need
 * means (for instance how an input key is derived).
 */
import { inputKeys, nonDifferentiableMessage } from '../context-keys.js';
import { MissingProviderError, ModelInputError } from '../errors.js';

export { inputKeys, nonDifferentiableMessage };
import { predictProbs } from '../tfjs/plan/predict.js';
import type { Surrogate } from '../tfjs/plan/plan-surrogate.js';
import type { SurrogateModel } from '../surrogate-model.js';
import type { LayersModel } from '../tfjs/tf.js';
import type { ContextNeed, DefenseContext, ProbBatch } from '../../defenses/types.js';

/** Something that gives a softmax per input: a layers model or any object with `probs`. */
export type ProbabilityModel = LayersModel | { probs(inputs: Float32Array, rows: number): ProbBatch };

export interface ContextProviders {
  /** A chain-model Surrogate (sync and async), or any SurrogateModel (computeDefenseContextAsync only). */
  surrogate?: Surrogate | SurrogateModel;
  misinformation?: ProbabilityModel;
}

/**
 * Computes the context for `needs` from the batch's inputs (`rows` rows, row-major). Throws
 * ModelInputError when inputs are needed but absent or malformed (the client's fault) and
 * MissingProviderError when no surrogate or misinformation model was configured (the operator's).
 */
export function computeDefenseContext(
  needs: readonly ContextNeed[],
  inputs: Float32Array | undefined,
  rows: number,
  providers: ContextProviders = {},
): DefenseContext {
  const context: { -readonly [K in keyof DefenseContext]: DefenseContext[K] } = {};
  const unique = [...new Set(needs)];
  if (unique.length === 0) return context;
  if (!inputs) throw new ModelInputError(`the defense needs the model inputs (for ${unique.join(', ')}), but none were given`);
  for (const need of unique) {
    switch (need) {
      case 'surrogate':
        context.surrogateProbs = syncSurrogate(providers, need).probs(inputs, rows);
        break;
      case 'surrogateGram':
        context.gram = syncSurrogate(providers, need).gram(inputs, rows);
        break;
      case 'misinformation':
        context.misinformationProbs = misinformationProbs(providers, inputs, rows);
        break;
      case 'inputKey':
        context.inputKeys = inputKeys(inputs, rows);
        break;
      default:
        throw new MissingProviderError(`unknown context need "${String(need)}"`);
    }
  }
  return context;
}

/**
 * The same context as computeDefenseContext, awaiting the surrogate's asynchronous work (probsAsync,
 * gramAsync), so any SurrogateModel (a functional TF.js model, a GraphModel, ONNX) can serve. The
 * serving layer uses this one.
 */
export async function computeDefenseContextAsync(
  needs: readonly ContextNeed[],
  inputs: Float32Array | undefined,
  rows: number,
  providers: ContextProviders = {},
): Promise<DefenseContext> {
  const unique = [...new Set(needs)];
  const rest = unique.filter((need) => need !== 'surrogate' && need !== 'surrogateGram');
  // Input checks and the non-surrogate needs (fast, synchronous) first.
  const context: { -readonly [K in keyof DefenseContext]: DefenseContext[K] } = computeDefenseContext(rest, inputs, rows, providers);
  if (rest.length === unique.length) return context;
  if (!inputs) throw new ModelInputError(`the defense needs the model inputs (for ${unique.join(', ')}), but none were given`);
  for (const need of unique) {
    if (need === 'surrogate') context.surrogateProbs = await requireSurrogate(providers, need).probsAsync(inputs, rows);
    else if (need === 'surrogateGram') {
      const surrogate = requireSurrogate(providers, need);
      if (!surrogate.differentiable || !surrogate.gramAsync) throw new MissingProviderError(nonDifferentiableMessage());
      context.gram = await surrogate.gramAsync(inputs, rows);
    }
  }
  return context;
}

function requireSurrogate(providers: ContextProviders, need: ContextNeed): Surrogate | SurrogateModel {
  if (!providers.surrogate)
    throw new MissingProviderError(
      `the defense needs ${need === 'surrogateGram' ? 'the surrogate’s Gram matrices' : 'the surrogate’s probabilities'}, but no surrogate model was configured`,
    );
  return providers.surrogate;
}

function syncSurrogate(providers: ContextProviders, need: ContextNeed): Surrogate {
  const surrogate = requireSurrogate(providers, need);
  if (!('probs' in surrogate) || !('gram' in surrogate))
    throw new MissingProviderError('this surrogate computes asynchronously: use computeDefenseContextAsync');
  return surrogate;
}

function misinformationProbs(providers: ContextProviders, inputs: Float32Array, rows: number): ProbBatch {
  const model = providers.misinformation;
  if (!model) throw new MissingProviderError('the defense needs a misinformation model, but none was configured');
  if ('probs' in model && typeof model.probs === 'function') return model.probs(inputs, rows);
  const data = predictProbs(model as LayersModel, inputs, rows);
  return { rows, cols: data.length / Math.max(1, rows), data };
}
