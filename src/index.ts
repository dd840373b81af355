/**
 * The public API. Re-exports only:
 * - defenses: pure math on probability batches (parseDefense, utilityCost, ...)
 * - models: TensorFlow.js backends, models on disk, training, the surrogate, defense context
 * - server: the Express middleware (poisonPredictions), the proxy, codecs, metrics, logs
 */
export * from './defenses/index.js';
export * from './models/index.js';
export * from './server/index.js';
