/** The defense layer's public API: pure math on probability batches. */
export type { ContextNeed, Defense, DefenseContext, ProbBatch } from './types.js';
export { DefenseError, DefenseSpecError, InvalidBatchError, MissingContextError } from './errors.js';
export { parseDefense, type DefenseConfig, type ParseOptions, type StageConfig } from './spec/spec.js';
export { DEFINITIONS, defenseNames } from './spec/registry.js';
export { describeParam } from './spec/params.js';
export {
  argmaxRows,
  batchFromRows,
  batchToRows,
  rowDistance,
  softmaxInto,
  toProbabilities,
  utilityCost,
  type DistanceNorm,
  type InputFormat,
} from './math/simplex.js';
