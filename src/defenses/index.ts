/** The defense layer's public API: pure math on probability batches. */
export type { ContextNeed, Defense, DefenseContext, ProbBatch } from './types.js';
export { DefenseError, DefenseSpecError, InvalidBatchError, MissingContextError } from './errors.js';
export { parseDefense, type DefenseConfig, type ParseOptions, type StageConfig } from './spec.js';
export { DEFINITIONS, defenseNames } from './registry.js';
export { describeParam } from './params.js';
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
} from './simplex.js';
