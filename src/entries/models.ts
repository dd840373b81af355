/** `model-stealing-defense/models`: what runs a network on TensorFlow.js (or onnxruntime-node): backends, surrogates, models on disk, training. */
export { tf, type LayersModel } from '../models/tf.js';
export { initBackend, type BackendInfo, type InitBackendOptions } from '../models/backend.js';
export { BackendError, ModelError, ModelFileError, ModelInputError, SurrogateThreadError, UnsupportedModelError } from '../models/errors.js';
export { createModel, type Architecture, type ModelSpec } from '../models/architectures.js';
export { loadModel, saveModel } from '../models/io.js';
export { accuracy, predictProbs } from '../models/predict.js';
export { trainModel, type TrainData, type TrainOptions, type TrainResult } from '../models/train.js';
export { Surrogate, type SurrogateOptions } from '../models/surrogate.js';
export type { SurrogateModel } from '../models/surrogate-model.js';
export { loadSurrogate, type LoadSurrogateOptions } from '../models/load-surrogate.js';
export { checkSurrogate, type CheckSurrogateOptions, type SurrogateWarning } from '../models/check-surrogate.js';
export { onnxRuntimeStatus } from '../models/onnx-runtime.js';
export { surrogateContext, loadSurrogateContext } from '../server/surrogate-context.js';
