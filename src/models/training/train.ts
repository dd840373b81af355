/**
 * One training loop for every model the project trains: the victim and the knockoff (soft-label
 * cross-entropy: the attacker learns from probability vectors), the misinformation model
 * (−log(1 − p_true)), all with Adam and seeded shuffling.
 *
 * Lean on purpose: the data set is uploaded once as one tensor, each batch is a `gather` of a
 * shuffled index slice (no per-batch copies from JS arrays), the step runs the model's plan (plain
 * tensor ops over its weight variables, no layers-API overhead), and the loss is read back only
 * when progress is reported. Where onnxruntime-node is installed, covered models train on it instead
 * (onnx-train.ts): same shuffling, same Adam, native kernels.
 */
import { kernelsMissing, missingKernel, onCpu } from '../tfjs/backend.js';
import { ModelError, ModelInputError } from '../errors.js';
import { ONNX_RUNTIME_INSTALL_HINT, loadOnnxRuntime } from '../onnx/runtime.js';
import { trainOnOnnxRuntime } from './onnx-train.js';
import { onnxTrainingSupport } from './onnx-train-graph.js';
import { forwardLogits, planOf, type ModelPlan } from '../tfjs/plan/plan.js';
import { accuracy } from '../tfjs/plan/predict.js';
import { permutation, seededRandom } from '../random.js';
import { tf, type LayersModel, type Tensor } from '../tfjs/tf.js';
import { parseOptions } from '../../validation/index.js';
import {
  trainEngineText,
  trainOptionsSchema,
  trainThreadsText,
  type EpochRecord,
  type TrainData,
  type TrainEngine,
  type TrainLoss,
  type TrainOptions,
  type TrainResult,
} from './train-types.js';

export {
  TRAIN_ENGINES,
  TRAIN_LOSSES,
  type EpochRecord,
  type TrainData,
  type TrainEngine,
  type TrainLoss,
  type TrainOptions,
  type TrainProgress,
  type TrainResult,
} from './train-types.js';

/** Trains `model` in place. Resolves when done; memory (tensor count) is the same before and after. */
export async function trainModel(model: LayersModel, data: TrainData, options: TrainOptions): Promise<TrainResult> {
  const plan = planOf(model);
  const settings = checkOptions(plan, data, options);
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  if (await useOnnxRuntime(plan, settings.loss, options.engine ?? parseEngine(process.env.MSD_TRAIN_ENGINE))) {
    return trainOnOnnxRuntime(model, plan, data, options, settings);
  }
  const missing = gradientKernelsMissing(plan, data, settings.loss);
  if (missing.length === 0) return runTraining(model, plan, data, options, settings);
  log(`tfjs backend ${tf.getBackend()} has no ${missing.join(', ')} kernel${missing.length > 1 ? 's' : ''}: training on cpu`);
  return onCpu(() => runTraining(model, plan, data, options, settings));
}

interface Settings {
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  loss: TrainLoss;
  intervalMs: number;
  threads: number;
}

function parseEngine(value: string | undefined): TrainEngine {
  if (value === undefined || value === '') return 'auto';
  return parseOptions(trainEngineText, value, { error: ModelInputError, name: () => 'MSD_TRAIN_ENGINE' });
}

/** What trainModel's default engine will run a covered model on here, in words (for logs and reports). */
export async function describeTrainingEngine(): Promise<string> {
  const engine = parseEngine(process.env.MSD_TRAIN_ENGINE);
  const installed = await loadOnnxRuntime().then(
    () => true,
    () => false,
  );
  if (engine === 'tfjs') return `training: tfjs ${tf.getBackend()} (MSD_TRAIN_ENGINE=tfjs)`;
  if (engine === 'auto' && !['wasm', 'cpu'].includes(tf.getBackend())) return `training: tfjs ${tf.getBackend()}`;
  if (installed) return 'training: onnxruntime-node (models and losses it covers; the others on tfjs)';
  return engine === 'onnxruntime'
    ? 'training: onnxruntime-node asked for but not installed'
    : `training: tfjs ${tf.getBackend()} (onnxruntime-node not installed, which trains faster: ${ONNX_RUNTIME_INSTALL_HINT})`;
}

async function useOnnxRuntime(plan: ModelPlan, loss: TrainLoss, engine: TrainEngine): Promise<boolean> {
  if (engine === 'tfjs') return false;
  const problem = loss !== 'soft-ce' ? `the ${loss} loss` : onnxTrainingSupport(plan);
  if (engine === 'onnxruntime') {
    if (problem) throw new ModelError(`training on onnxruntime does not cover ${problem}; use engine "tfjs" or "auto"`);
    await loadOnnxRuntime();
    return true;
  }
  if (problem || !['wasm', 'cpu'].includes(tf.getBackend())) return false;
  return loadOnnxRuntime().then(
    () => true,
    () => false,
  );
}

function checkOptions(plan: ModelPlan, data: TrainData, options: TrainOptions): Settings {
  parseOptions(trainOptionsSchema, options, { error: ModelInputError });
  const settings: Settings = {
    epochs: options.epochs,
    batchSize: options.batchSize ?? 64,
    learningRate: options.learningRate ?? 1e-3,
    seed: options.seed ?? 0,
    loss: options.loss ?? 'soft-ce',
    intervalMs: options.progressIntervalMs ?? 250,
    threads: options.threads ?? parseOptions(trainThreadsText, process.env.MSD_TRAIN_THREADS || '1', { error: ModelInputError, name: () => 'threads' }),
  };
  const width = plan.inputShape.reduce((a, b) => a * b, 1);
  if (!Number.isInteger(data.rows) || data.rows < 1) throw new ModelInputError(`training needs at least one row, got ${data.rows}`);
  if (data.x.length !== data.rows * width)
    throw new ModelInputError(`x holds ${data.x.length} values; ${data.rows} rows of ${width} need ${data.rows * width}`);
  if ((data.targets === undefined) === (data.labels === undefined))
    throw new ModelInputError('give either targets (soft labels) or labels, not both or neither');
  if (data.targets && data.targets.length !== data.rows * plan.classes) {
    throw new ModelInputError(`targets hold ${data.targets.length} values; ${data.rows} rows of ${plan.classes} classes need ${data.rows * plan.classes}`);
  }
  if (data.labels) {
    if (data.labels.length !== data.rows) throw new ModelInputError(`${data.labels.length} labels for ${data.rows} rows`);
    for (let i = 0; i < data.labels.length; i++) {
      const label = data.labels[i];
      if (!(label >= 0 && label < plan.classes)) throw new ModelInputError(`label ${label} at row ${i} is outside 0..${plan.classes - 1}`);
    }
  }
  return settings;
}

/** Kernels the backward pass needs that the active backend lacks, found by one gradient on two rows. */
function gradientKernelsMissing(plan: ModelPlan, data: TrainData, loss: TrainLoss): string[] {
  const known = kernelsMissing(['Conv2DBackpropInput', 'MaxPoolGrad', 'AvgPoolGrad']).filter((kernel) => usesKernel(plan, kernel));
  if (known.length > 0) return known;
  try {
    tf.tidy(() => {
      const rows = Math.min(2, data.rows);
      const width = data.x.length / data.rows;
      const x = tf.tensor2d(data.x.subarray(0, rows * width), [rows, width]);
      const targets = tf.oneHot(tf.zeros([rows], 'int32'), plan.classes).toFloat();
      const { grads } = tf.variableGrads(() => lossOf(loss, forwardLogits(plan, x, { differentiable: true }), targets, undefined), [...plan.variables]);
      Object.values(grads).forEach((g) => g.dispose());
    });
    return [];
  } catch (error) {
    const kernel = missingKernel(error);
    if (kernel === undefined) throw error;
    return [kernel];
  }
}

function usesKernel(plan: ModelPlan, kernel: string): boolean {
  const kind = { Conv2DBackpropInput: 'conv2d', MaxPoolGrad: 'maxPool', AvgPoolGrad: 'avgPool' }[kernel];
  return plan.steps.some((step) => step.kind === kind);
}

function runTraining(model: LayersModel, plan: ModelPlan, data: TrainData, options: TrainOptions, settings: Settings): TrainResult {
  const { epochs, batchSize, loss } = settings;
  const rows = data.rows;
  const batches = Math.ceil(rows / batchSize);
  const width = data.x.length / rows;
  const random = seededRandom(settings.seed);
  const optimizer = tf.train.adam(settings.learningRate);
  const variables = [...plan.variables];
  // The whole data set lives in one tensor; batches are gathered from it.
  const xAll = tf.tensor2d(data.x, [rows, width]);
  const targetsAll = data.targets
    ? tf.tensor2d(data.targets, [rows, plan.classes])
    : tf.tidy(() => tf.oneHot(tf.tensor1d(Int32Array.from(data.labels!), 'int32'), plan.classes).toFloat());
  const exclusionMask = loss === 'misinformation' ? tf.tidy(() => tf.mul(tf.eye(plan.classes), -1e9).expandDims(0)) : undefined;
  const history: EpochRecord[] = [];
  let trainSeconds = 0;
  try {
    for (let epoch = 1; epoch <= epochs; epoch++) {
      const order = tf.tensor1d(permutation(rows, random), 'int32');
      let lossSum: Tensor = tf.scalar(0);
      let correctSum: Tensor = tf.scalar(0);
      let lastReport = Date.now();
      const started = performance.now();
      const report = (batch: number, seen: number, epochDone: boolean, validationAccuracy?: number): { loss: number; accuracy: number } => {
        const [lossTotal, correct] = [lossSum.dataSync()[0], correctSum.dataSync()[0]];
        const summary = { loss: lossTotal / Math.max(1, seen), accuracy: correct / Math.max(1, seen) };
        options.onProgress?.({ epoch, epochs, batch, batches, ...summary, validationAccuracy, epochDone });
        return summary;
      };
      try {
        for (let batch = 0; batch < batches; batch++) {
          const start = batch * batchSize;
          const size = Math.min(batchSize, rows - start);
          const [newLoss, newCorrect] = tf.tidy(() => {
            const index = order.slice(start, size);
            const x = tf.gather(xAll, index);
            const targets = tf.gather(targetsAll, index);
            let correct: Tensor | undefined;
            const cost = optimizer.minimize(
              () => {
                const logits = forwardLogits(plan, x, { differentiable: true });
                correct = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), tf.argMax(targets, 1)), 'float32')));
                return lossOf(loss, logits, targets, exclusionMask);
              },
              true,
              variables,
            )!;
            const sums = [tf.add(lossSum, tf.mul(cost, size)), tf.add(correctSum, correct!)];
            correct!.dispose();
            return sums;
          });
          lossSum.dispose();
          correctSum.dispose();
          lossSum = newLoss;
          correctSum = newCorrect;
          options.onStep?.((epoch - 1) * batches + batch + 1, epochs * batches);
          if (options.onProgress && Date.now() - lastReport >= settings.intervalMs && batch + 1 < batches) {
            lastReport = Date.now();
            report(batch + 1, Math.min(rows, (batch + 1) * batchSize), false);
          }
        }
        // Reading the sums waits for the last step, so the timing covers all the work.
        lossSum.dataSync();
        const seconds = (performance.now() - started) / 1000;
        trainSeconds += seconds;
        const validationAccuracy = options.validation
          ? accuracy(model, options.validation.x, options.validation.labels, options.validation.rows ?? options.validation.labels.length)
          : undefined;
        const summary = report(batches, rows, true, validationAccuracy);
        history.push({ epoch, ...summary, validationAccuracy, seconds, imagesPerSecond: rows / seconds });
      } finally {
        order.dispose();
        lossSum.dispose();
        correctSum.dispose();
      }
    }
  } finally {
    xAll.dispose();
    targetsAll.dispose();
    exclusionMask?.dispose();
    optimizer.dispose();
  }
  return { history, imagesPerSecond: (rows * epochs) / Math.max(trainSeconds, 1e-9), backend: tf.getBackend() };
}

/**
 * Mean loss over the batch.
 * - soft-ce: −Σ_k t_k log softmax(z)_k
 * - misinformation: −Σ_k t_k log(1 − softmax(z)_k), i.e. −log(1 − p_true) for one-hot targets; log(1 − p_k)
 *   is computed stably as logsumexp_{j≠k} z_j − logsumexp_j z_j.
 */
export function lossOf(loss: TrainLoss, logits: Tensor, targets: Tensor, exclusionMask: Tensor | undefined): tf.Scalar {
  return tf.tidy((): tf.Scalar => {
    if (loss === 'soft-ce') return tf.neg(tf.mean(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), 1))) as tf.Scalar;
    const classes = logits.shape[1] as number;
    const mask = exclusionMask ?? tf.mul(tf.eye(classes), -1e9).expandDims(0);
    const leaveOneOut = tf.logSumExp(tf.add(tf.expandDims(logits, 1), mask), 2);
    const logNotK = tf.sub(leaveOneOut, tf.logSumExp(logits, 1, true));
    return tf.neg(tf.mean(tf.sum(tf.mul(targets, logNotK), 1))) as tf.Scalar;
  });
}
