/**
 * The public API. Re-exports only:
 * - defenses: pure math on probability batches (parseDefense, utilityCost, ...)
 * - models: TensorFlow.js backends, models on disk, training, the surrogate, defense context
 * - server: the Express middleware (poisonPredictions), the proxy, codecs, metrics, logs
 * - detection: pure per-client extraction detectors (OOD rate, PRADA, HODA), the budget and the policy
 */
export * from './defenses/index.js';
export * from './models/index.js';
export * from './server/index.js';
export * from './detection/index.js';
