/**
 * The models layer: everything that runs a network, on TensorFlow.js. Re-exports only.
 *
 * Start-up
 *   await initBackend()                 tensorflow-gpu → tensorflow → wasm → cpu; MSD_BACKEND forces one.
 *                                       Returns BackendInfo {name, versions, threads, failures}.
 *   withCpuFallback(what, fn)           runs fn on cpu when the active backend lacks a kernel (said once).
 *                                       Dense and convolution layers carry their own gradients, so training
 *                                       and Gram matrices need no kernel wasm lacks.
 *
 * Models
 *   createModel({arch: 'mlp'|'lenet'|'cnn', inputShape, classes, seed})   logits out, seeded weights
 *   saveModel(model, dir) / loadModel(dir)                          model.json + weights.bin, no tfjs-node;
 *                                                                    ModelFileError names a bad file
 *   writeModelMeta(dir, meta) / readModelMeta(dir)                  meta.json beside the model
 *
 * Inference (inputs: one Float32Array of rows × inputSize, row-major)
 *   predictProbs(model, inputs, rows)   B×K softmax, batched and tidy
 *   predictLogits / predictClasses / accuracy
 *
 * Training
 *   trainModel(model, {x, rows, targets | labels}, {epochs, batchSize, learningRate, seed,
 *              loss: 'soft-ce'|'misinformation', validation, onProgress})
 *     → {history, imagesPerSecond, backend}
 *
 * MAD's surrogate and a defense's context
 *   Surrogate.random(spec) / Surrogate.load(dir)
 *     .probs(inputs, rows) → ProbBatch; .gram(inputs, rows) → Float64Array B×K×K
 *   computeDefenseContext(defense.needs, inputs, rows, {surrogate, misinformation}) → DefenseContext
 *     throws ModelInputError (inputs absent or malformed: the client's fault) or
 *     MissingProviderError (no surrogate / misinformation model configured: the operator's)
 *
 * Every other file takes `tf` from './tf.js'.
 */
export { tf } from './tf.js';
export type { LayersModel, Tensor } from './tf.js';
export {
  BACKEND_ORDER,
  currentBackend,
  formatBackendInfo,
  initBackend,
  parseBackendName,
  withCpuFallback,
  type BackendFailure,
  type BackendInfo,
  type BackendName,
  type InitBackendOptions,
} from './backend.js';
export { BackendError, MissingProviderError, ModelError, ModelFileError, ModelInputError, UnsupportedModelError } from './errors.js';
export { ARCHITECTURES, classCount, createModel, inputSize, type Architecture, type ModelSpec } from './architectures.js';
export { META_FILE, MODEL_FILE, WEIGHTS_FILE, loadModel, readModelMeta, saveModel, writeModelMeta, type ModelMeta } from './io.js';
export { accuracy, predictClasses, predictLogits, predictProbs, type PredictOptions } from './predict.js';
export { TRAIN_LOSSES, trainModel, type EpochRecord, type TrainData, type TrainLoss, type TrainOptions, type TrainProgress, type TrainResult } from './train.js';
export { Surrogate, type SurrogateOptions } from './surrogate.js';
export type { GramMethod } from './gram.js';
export { computeDefenseContext, inputKeys, type ContextProviders, type ProbabilityModel } from './context.js';
