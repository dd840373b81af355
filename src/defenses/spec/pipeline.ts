/**
 * Composition: stages applied in order behind one entry check. The input is validated (or turned
 * from logits into probabilities) once, each stage writes a fresh buffer, and the caller's batch
 * is never mutated.
 */
import type { Stage } from './definition.js';
import { DefenseSpecError, InvalidBatchError } from '../errors.js';
import { toProbabilities, type InputFormat } from '../math/simplex.js';
import type { ContextNeed, Defense, DefenseContext, ProbBatch } from '../types.js';

export interface NamedStage {
  name: string;
  spec: string;
  stage: Stage;
}

export function composeDefense(stages: readonly NamedStage[], inputFormat: InputFormat): Defense {
  if (stages.length === 0) throw new DefenseSpecError('a defense needs at least one stage');
  stages.forEach(({ spec, stage }, i) => {
    if (!stage.onSimplex && i < stages.length - 1) {
      throw new DefenseSpecError(`${spec} returns rows that do not sum to 1, so it must be the last stage (or set renormalize=true)`);
    }
  });
  const needs = [...new Set<ContextNeed>(stages.flatMap(({ stage }) => stage.needs))];
  return Object.freeze({
    name: stages.map((s) => s.name).join('|'),
    spec: stages.map((s) => s.spec).join('|'),
    needs,
    keepsTop1: stages.every(({ stage }) => stage.keepsTop1),
    apply(batch: ProbBatch, ctx: DefenseContext = {}): ProbBatch {
      let current = toProbabilities(batch, inputFormat);
      if (ctx.inputKeys && ctx.inputKeys.length !== current.rows) {
        throw new InvalidBatchError(`got ${ctx.inputKeys.length} input keys for ${current.rows} rows`);
      }
      for (const { stage } of stages) {
        const out = new Float32Array(current.data.length);
        stage.run(current, out, ctx);
        current = { rows: current.rows, cols: current.cols, data: out };
      }
      return current;
    },
  });
}
