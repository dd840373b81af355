/**
 * trainModel's loop on onnxruntime-node: the step is the ONNX graph of onnx-train-graph.ts, run by
 * onnxruntime's native CPU kernels (wasm runs convolutions on one thread at about half PyTorch's
 * speed; onnxruntime runs them faster than PyTorch per core). Same shuffling, same Adam, same
 * progress reports; the model's variables are written back at the end, before each validation and
 * before each onStep callback (so checkpoints see the current weights).
 */
import { loadOnnxRuntime, type OrtTensor } from '../onnx/runtime.js';
import { buildTrainingGraph, fromOnnxKernel, NEXT, toOnnxKernel, TRAINING_INPUTS, TRAINING_OUTPUTS, type WeightSlot } from './onnx-train-graph.js';
import { writeOnnxModel } from '../onnx/writer.js';
import type { ModelPlan } from '../tfjs/plan/plan.js';
import { accuracy } from '../tfjs/plan/predict.js';
import { permutation, seededRandom } from '../random.js';
import { tf, type LayersModel } from '../tfjs/tf.js';
import type { EpochRecord, TrainData, TrainOptions, TrainResult } from './train-types.js';

export interface OnnxTrainSettings {
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  intervalMs: number;
  /** onnxruntime's threads inside one operator. */
  threads: number;
}

export async function trainOnOnnxRuntime(
  model: LayersModel,
  plan: ModelPlan,
  data: TrainData,
  options: TrainOptions,
  settings: OnnxTrainSettings,
): Promise<TrainResult> {
  const ort = await loadOnnxRuntime();
  const graph = buildTrainingGraph(plan);
  const session = await ort.InferenceSession.create(writeOnnxModel(graph.spec), {
    intraOpNumThreads: settings.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // Errors only: warnings (e.g. on initializers it folds away) would interleave with progress lines.
    logSeverityLevel: 3,
  });
  const { epochs, batchSize } = settings;
  const rows = data.rows;
  const classes = plan.classes;
  const width = data.x.length / rows;
  const batches = Math.ceil(rows / batchSize);
  const random = seededRandom(settings.seed);
  const state = new Map<string, OrtTensor>();
  for (const slot of graph.weights) {
    const values = slot.variable.dataSync() as Float32Array;
    state.set(slot.value, new ort.Tensor('float32', slot.convolution ? toOnnxKernel(values, slot.variable.shape) : Float32Array.from(values), [...slot.shape]));
    for (const moment of [slot.firstMoment, slot.secondMoment]) state.set(moment, new ort.Tensor('float32', new Float32Array(values.length), [...slot.shape]));
  }
  const writeBack = () => writeWeights(graph.weights, state);
  const learningRate = new ort.Tensor('float32', Float32Array.of(settings.learningRate), []);
  let beta1Power = 1;
  let beta2Power = 1;
  const history: EpochRecord[] = [];
  let trainSeconds = 0;
  try {
    for (let epoch = 1; epoch <= epochs; epoch++) {
      const order = permutation(rows, random);
      let lossSum = 0;
      let correctSum = 0;
      let lastReport = Date.now();
      const started = performance.now();
      const report = (batch: number, seen: number, epochDone: boolean, validationAccuracy?: number) => {
        const summary = { loss: lossSum / Math.max(1, seen), accuracy: correctSum / Math.max(1, seen) };
        options.onProgress?.({ epoch, epochs, batch, batches, ...summary, validationAccuracy, epochDone });
        return summary;
      };
      for (let batch = 0; batch < batches; batch++) {
        const start = batch * batchSize;
        const size = Math.min(batchSize, rows - start);
        const { x, targets } = gatherBatch(data, order.subarray(start, start + size), width, classes);
        // tf.train.adam keeps β^t in float32; so does this.
        beta1Power = Math.fround(beta1Power * 0.9);
        beta2Power = Math.fround(beta2Power * 0.999);
        const feeds: Record<string, OrtTensor> = {
          [TRAINING_INPUTS.x]: new ort.Tensor('float32', x, [size, width]),
          [TRAINING_INPUTS.targets]: new ort.Tensor('float32', targets, [size, classes]),
          [TRAINING_INPUTS.rows]: new ort.Tensor('float32', Float32Array.of(size), []),
          [TRAINING_INPUTS.learningRate]: learningRate,
          [TRAINING_INPUTS.oneMinusBeta1Power]: new ort.Tensor('float32', Float32Array.of(1 - beta1Power), []),
          [TRAINING_INPUTS.oneMinusBeta2Power]: new ort.Tensor('float32', Float32Array.of(1 - beta2Power), []),
        };
        for (const [name, tensor] of state) feeds[name] = tensor;
        const results = await session.run(feeds);
        lossSum += (results[TRAINING_OUTPUTS.lossSum].data as Float32Array)[0];
        correctSum += (results[TRAINING_OUTPUTS.correct].data as Float32Array)[0];
        for (const name of state.keys()) {
          state.get(name)!.dispose();
          state.set(name, results[name + NEXT]);
        }
        for (const name of [
          TRAINING_INPUTS.x,
          TRAINING_INPUTS.targets,
          TRAINING_INPUTS.rows,
          TRAINING_INPUTS.oneMinusBeta1Power,
          TRAINING_INPUTS.oneMinusBeta2Power,
        ])
          feeds[name].dispose();
        if (options.onStep) {
          writeBack();
          options.onStep((epoch - 1) * batches + batch + 1, epochs * batches);
        }
        if (options.onProgress && Date.now() - lastReport >= settings.intervalMs && batch + 1 < batches) {
          lastReport = Date.now();
          report(batch + 1, Math.min(rows, (batch + 1) * batchSize), false);
        }
      }
      const seconds = (performance.now() - started) / 1000;
      trainSeconds += seconds;
      let validationAccuracy: number | undefined;
      if (options.validation) {
        writeBack();
        validationAccuracy = accuracy(model, options.validation.x, options.validation.labels, options.validation.rows ?? options.validation.labels.length);
      }
      const summary = report(batches, rows, true, validationAccuracy);
      history.push({ epoch, ...summary, validationAccuracy, seconds, imagesPerSecond: rows / seconds });
    }
    writeBack();
  } finally {
    for (const tensor of state.values()) tensor.dispose();
    learningRate.dispose();
    await session.release();
  }
  return {
    history,
    imagesPerSecond: (rows * epochs) / Math.max(trainSeconds, 1e-9),
    backend: `onnxruntime (${settings.threads} thread${settings.threads === 1 ? '' : 's'})`,
  };
}

/** The rows of `index` and their targets (one-hot when the data has hard labels). */
function gatherBatch(data: TrainData, index: Int32Array, width: number, classes: number): { x: Float32Array; targets: Float32Array } {
  const x = new Float32Array(index.length * width);
  const targets = new Float32Array(index.length * classes);
  index.forEach((row, i) => {
    x.set(data.x.subarray(row * width, (row + 1) * width), i * width);
    if (data.targets) targets.set(data.targets.subarray(row * classes, (row + 1) * classes), i * classes);
    else targets[i * classes + data.labels![row]] = 1;
  });
  return { x, targets };
}

function writeWeights(slots: readonly WeightSlot[], state: Map<string, OrtTensor>): void {
  for (const { variable, value, convolution } of slots) {
    const values = state.get(value)!.data as Float32Array;
    tf.tidy(() => variable.assign(tf.tensor(convolution ? fromOnnxKernel(values, variable.shape) : values, variable.shape)));
  }
}
