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
 *              loss: 'soft-ce'|'misinformation', validation, onProgress, engine: 'auto'|'tfjs'|'onnxruntime', threads})
 *     → {history, imagesPerSecond, backend}
 *
 * MAD's surrogate and a defense's context
 *   Surrogate.random(spec) / Surrogate.load(dir)
 *     .probs(inputs, rows) → ProbBatch; .gram(inputs, rows) → Float64Array B×K×K
 *   computeDefenseContext(defense.needs, inputs, rows, {surrogate, misinformation}) → DefenseContext
 *     throws ModelInputError (inputs absent or malformed: the client's fault) or
 *     MissingProviderError (no surrogate / misinformation model configured: the operator's)
 *
 * Image preprocessing (pure, no decoder): pixelsToTensor(rgbBytes, {width, height, channels, layout,
 *   scale, mean, std}, out, offset) and convertLayout(data, rows, h, w, c, from, to) for NHWC ↔ NCHW.
 * Surrogates for any model (SurrogateModel: classes, inputShape, differentiable, probsAsync, gramAsync?)
 *   loadSurrogate({path | dir | model | onnx, reinit?: seed, output?: 'auto'|'logits'|'probs', chunkRows?, check?})
 *     path (dir is its other name): a TF.js model's JSON file by any name or its directory, or an ONNX file
 *     TfjsSurrogate (LayersModel of any topology, GraphModel), OnnxSurrogate (onnxruntime-node,
 *     forward-only), or the plan-based Surrogate for chain models
 *   loadSurrogate({..., thread: true}) / loadThreadedSurrogate({dir | onnx, ...})   the same surrogate in a
 *     worker thread: the event loop stays free during its forward passes; SurrogateThreadError once
 *     the worker is gone (every pending and later call), never a silent restart
 *   computeDefenseContextAsync(needs, inputs, rows, {surrogate, ...}) → Promise<DefenseContext>
 *   reinitLayersModel / reinitFromTopology / reinitOnnx / reinitGraphArtifacts / reinitGraphModel
 *                                                          seeded fresh weights, fan-in scaled
 *   checkSurrogate(surrogate, {victim?, probes?}) → SurrogateWarning[]   is it the victim, do its
 *     directions carry information (constant or one-hot softmax on probes)?
 *   writeOnnxModel(spec) / readOnnxGraph(bytes)            small ONNX files without an exporter
 *
 * Rooms (dependencies point down this list only; index.ts is the one file that imports them all)
 *   surrogates/   load, check and thread a surrogate of any kind; a defense's context from it
 *   checkpoints/  HODA's training checkpoints (checkpoints.ts) and its glue to src/detection (hoda-hardness.ts)
 *   training/     trainModel: the tfjs loop and the ONNX training step (onnx-train*.ts)
 *   onnx/         the protobuf reader/writer, layers → ONNX conversion, onnxruntime and its surrogate
 *   tfjs/plan/    a sequential model as a plan over hand-written kernels: predict, Gram, input gradient,
 *                 the plan-based Surrogate
 *   tfjs/         TF.js itself (tf.ts, backend.ts), models on disk, architectures, re-initialisation,
 *                 the any-topology TfjsSurrogate
 *   ./            no TF.js, no onnxruntime: errors, seeded randomness, the SurrogateModel interface and its
 *                 output helpers, input keys, image preprocessing (the server imports these directly)
 *
 * Every file takes `tf` from tfjs/tf.ts; only tfjs/ names the @tensorflow packages (tf.ts, and backend.ts
 * for the backends').
 */

// ./ — no TF.js
export { BackendError, MissingProviderError, ModelError, ModelFileError, ModelInputError, SurrogateThreadError, UnsupportedModelError } from './errors.js';
export { seededFloats } from './random.js';
export type { SurrogateModel } from './surrogate-model.js';
export { SURROGATE_OUTPUTS, looksLikeProbabilities, type SurrogateOutput } from './surrogate-output.js';
export {
  CHANNEL_ORDERS,
  IMAGE_LAYOUTS,
  LUMA,
  channelCount,
  convertLayout,
  exampleShape,
  pixelsToTensor,
  type ChannelOrder,
  type ImageLayout,
  type PixelPreprocessing,
} from './preprocess.js';

// tfjs/
export { tf } from './tfjs/tf.js';
export type { LayersModel, Tensor } from './tfjs/tf.js';
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
} from './tfjs/backend.js';
export {
  ARCHITECTURES,
  classCount,
  convolutionFits,
  createModel,
  fittingArchitecture,
  inputSize,
  MIN_CONV_SIDE,
  type Architecture,
  type ModelSpec,
} from './tfjs/architectures.js';
export { META_FILE, MODEL_FILE, WEIGHTS_FILE, loadModel, readModelMeta, saveModel, writeModelMeta, type ModelMeta } from './tfjs/io.js';
export { readModelDir, loadTfjsModel, modelPathKind, type ModelDirArtifacts, type ModelPathKind } from './tfjs/model-dir.js';
export { reinitFromTopology, reinitLayersModel, reinitWeights, type ReinitOptions } from './tfjs/reinit.js';
export { graphModelArtifacts, graphWeightRoles, reinitGraphArtifacts, reinitGraphModel, type GraphWeightRole } from './tfjs/graph-reinit.js';
export { TfjsSurrogate, type TfjsSurrogateOptions } from './tfjs/tfjs-surrogate.js';

// tfjs/plan/
export { accuracy, predictClasses, predictLogits, predictProbs, type PredictOptions } from './tfjs/plan/predict.js';
export { lossGradientSign } from './tfjs/plan/input-gradient.js';
export type { GramMethod } from './tfjs/plan/gram.js';
export { Surrogate, type SurrogateOptions } from './tfjs/plan/plan-surrogate.js';
export { asyncSurrogate } from './tfjs/plan/async-surrogate.js';

// onnx/
export { writeOnnxModel, type OnnxAttribute, type OnnxModelSpec, type OnnxNodeSpec, type OnnxTensorSpec, type OnnxValueSpec } from './onnx/writer.js';
export { readOnnxGraph, reinitOnnx, type OnnxGraphInfo } from './onnx/graph.js';
export { layersModelToOnnx, ONNX_CONVERTIBLE_LAYERS } from './onnx/layers-to-onnx.js';
export { loadOnnxRuntime, onnxRuntimeStatus } from './onnx/runtime.js';
export { OnnxSurrogate, type OnnxSurrogateOptions } from './onnx/onnx-surrogate.js';

// training/
export {
  describeTrainingEngine,
  TRAIN_ENGINES,
  TRAIN_LOSSES,
  trainModel,
  type EpochRecord,
  type TrainData,
  type TrainEngine,
  type TrainLoss,
  type TrainOptions,
  type TrainProgress,
  type TrainResult,
} from './training/train.js';

// checkpoints/
export {
  checkpointRecorder,
  loadCheckpointModels,
  saveCheckpoints,
  CHECKPOINTS_FILE,
  DEFAULT_CHECKPOINTS,
  type CheckpointWeights,
} from './checkpoints/checkpoints.js';
export {
  calibrateHodaOnHeldOut,
  calibrateHodaFromHardness,
  calibrateHodaWithSurrogates,
  checkpointHardness,
  surrogateHardness,
  surrogateHardnessInChunks,
  type HeldOutCalibrationOptions,
} from './checkpoints/hoda-hardness.js';

// surrogates/
export {
  computeDefenseContext,
  computeDefenseContextAsync,
  inputKeys,
  nonDifferentiableMessage,
  type ContextProviders,
  type ProbabilityModel,
} from './surrogates/defense-context.js';
export { loadSurrogate, SURROGATE_ENGINES, type LoadSurrogateOptions, type SurrogateEngine } from './surrogates/load-surrogate.js';
export { loadThreadedSurrogate, type ThreadedSurrogate, type ThreadedSurrogateOptions } from './surrogates/threaded-surrogate.js';
export {
  checkSurrogate,
  surrogateOrigin,
  surrogateWarningLine,
  type CheckSurrogateOptions,
  type SurrogateOrigin,
  type SurrogateWarning,
  type SurrogateWarningCode,
  type VictimSource,
} from './surrogates/check-surrogate.js';
