/** `model-stealing-defense/defenses`: the defenses alone, pure math on probability batches; loads neither TensorFlow.js nor Express. */
export { parseDefense, type DefenseConfig, type ParseOptions, type StageConfig } from '../defenses/spec/spec.js';
export { defenseNames } from '../defenses/spec/registry.js';
export { batchFromRows, batchToRows, utilityCost, type InputFormat } from '../defenses/math/simplex.js';
export type { ContextNeed, Defense, DefenseContext, ProbBatch } from '../defenses/types.js';
export { DefenseError, DefenseSpecError, InvalidBatchError, MissingContextError } from '../defenses/errors.js';
