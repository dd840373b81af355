/** `model-stealing-defense/models`: what runs a network on TensorFlow.js (or onnxruntime-node): backends, surrogates, models on disk, training. */
export { tf, type LayersModel } from '../models/tfjs/tf.js';
export { initBackend, type BackendInfo, type InitBackendOptions } from '../models/tfjs/backend.js';
export { BackendError, ModelError, ModelFileError, ModelInputError, SurrogateThreadError, UnsupportedModelError } from '../models/errors.js';
export { createModel, type Architecture, type ModelSpec } from '../models/tfjs/architectures.js';
export { loadModel, saveModel } from '../models/tfjs/io.js';
export { accuracy, predictProbs } from '../models/tfjs/plan/predict.js';
export { trainModel, type TrainData, type TrainOptions, type TrainResult } from '../models/training/train.js';
export { Surrogate, type SurrogateOptions } from '../models/tfjs/plan/plan-surrogate.js';
export type { SurrogateModel } from '../models/surrogate-model.js';
export { loadSurrogate, type LoadSurrogateOptions } from '../models/surrogates/load-surrogate.js';
export { checkSurrogate, type CheckSurrogateOptions, type SurrogateWarning } from '../models/surrogates/check-surrogate.js';
export { onnxRuntimeStatus } from '../models/onnx/runtime.js';
export { surrogateContext, loadSurrogateContext } from '../server/surrogate-context.js';
