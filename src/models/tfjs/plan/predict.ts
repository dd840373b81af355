/**
 * Batched inference: B inputs in one Float32Array, B×K logits or probabilities out, computed in
 * chunks inside tf.tidy so memory stays flat however many rows come in.
 */
import { inputSize } from '../architectures.js';
import { withCpuFallback } from '../backend.js';
import { ModelInputError } from '../../errors.js';
import { forwardLogits, hasPlan, planOf } from './plan.js';
import { tf, type LayersModel, type Tensor } from '../tf.js';

export interface PredictOptions {
  /** Rows per forward pass (default 1024). */
  chunkRows?: number;
}

/** B×K logits (row-major). */
export function predictLogits(model: LayersModel, inputs: Float32Array, rows: number, options: PredictOptions = {}): Float32Array {
  return runChunks(model, inputs, rows, options, (x) => logitsOf(model, x));
}

/** B×K softmax probabilities (row-major). */
export function predictProbs(model: LayersModel, inputs: Float32Array, rows: number, options: PredictOptions = {}): Float32Array {
  return runChunks(model, inputs, rows, options, (x) => (outputsProbabilities(model) ? (model.predict(x) as Tensor) : tf.softmax(logitsOf(model, x))));
}

/** Top-1 class per row. */
export function predictClasses(model: LayersModel, inputs: Float32Array, rows: number, options: PredictOptions = {}): Int32Array {
  const logits = predictLogits(model, inputs, rows, options);
  const classes = logits.length / Math.max(1, rows);
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let k = 1; k < classes; k++) if (logits[r * classes + k] > logits[r * classes + best]) best = k;
    out[r] = best;
  }
  return out;
}

/** Fraction of rows whose top-1 class equals the label. */
export function accuracy(model: LayersModel, inputs: Float32Array, labels: ArrayLike<number>, rows: number, options: PredictOptions = {}): number {
  if (labels.length !== rows) throw new ModelInputError(`${labels.length} labels for ${rows} rows`);
  const predicted = predictClasses(model, inputs, rows, options);
  let correct = 0;
  for (let r = 0; r < rows; r++) if (predicted[r] === labels[r]) correct++;
  return rows === 0 ? 0 : correct / rows;
}

/** Checks that `inputs` holds `rows` finite rows for this model; returns the row width. */
export function checkInputs(model: LayersModel, inputs: Float32Array | undefined, rows: number): number {
  const width = inputSize(model);
  if (!Number.isInteger(rows) || rows < 0) throw new ModelInputError(`rows must be a non-negative integer, got ${rows}`);
  if (!inputs) throw new ModelInputError('no inputs were given, but the model needs them');
  if (inputs.length !== rows * width) {
    throw new ModelInputError(`inputs hold ${inputs.length} values; ${rows} rows of ${width} need ${rows * width}`);
  }
  for (let i = 0; i < inputs.length; i++) {
    if (!Number.isFinite(inputs[i])) throw new ModelInputError(`input row ${Math.floor(i / width)} holds a non-finite value at position ${i % width}`);
  }
  return width;
}

function logitsOf(model: LayersModel, x: Tensor): Tensor {
  if (hasPlan(model)) return forwardLogits(planOf(model), x);
  const out = model.predict(x) as Tensor;
  // A model outside the plan's reach that ends in softmax: its log is a valid set of logits.
  return outputsProbabilities(model) ? tf.log(tf.maximum(out, 1e-30)) : out;
}

function outputsProbabilities(model: LayersModel): boolean {
  if (hasPlan(model)) return false;
  const last = model.layers[model.layers.length - 1];
  return (last.getConfig() as { activation?: unknown }).activation === 'softmax';
}

function runChunks(model: LayersModel, inputs: Float32Array, rows: number, options: PredictOptions, compute: (x: Tensor) => Tensor): Float32Array {
  const width = checkInputs(model, inputs, rows);
  const chunk = Math.max(1, Math.floor(options.chunkRows ?? 1024));
  const shape = model.inputs[0].shape.slice(1) as number[];
  let out: Float32Array | undefined;
  let classes = 0;
  for (let start = 0; start < rows; start += chunk) {
    const n = Math.min(chunk, rows - start);
    const values = withCpuFallback('inference', () =>
      tf.tidy(() => compute(tf.tensor(inputs.subarray(start * width, (start + n) * width), [n, ...shape], 'float32')).dataSync() as Float32Array),
    );
    if (!out) {
      classes = values.length / n;
      out = new Float32Array(rows * classes);
    }
    out.set(values, start * classes);
  }
  return out ?? new Float32Array(0);
}
