/**
 * What a surrogate's output means: logits or probabilities. Models say so differently (a final
 * softmax layer, a Softmax node, nothing at all), so the surrogate either takes the caller's word
 * (`output: 'logits' | 'probs'`) or, with 'auto', looks at each batch: rows that are non-negative
 * and sum to 1 (within 1e-3) are probabilities, anything else is logits and gets a softmax.
 */
import { oneOfList, parseOptions } from '../validation/index.js';
import { ModelInputError } from './errors.js';

export type SurrogateOutput = 'auto' | 'logits' | 'probs';

export const SURROGATE_OUTPUTS: readonly SurrogateOutput[] = ['auto', 'logits', 'probs'];

const outputSchema = oneOfList(SURROGATE_OUTPUTS).default('auto');

/** The `output` option as a user writes it (undefined: 'auto'); anything else throws ModelInputError saying what to write. */
export function parseSurrogateOutput(value: unknown): SurrogateOutput {
  return parseOptions(outputSchema, value, { error: ModelInputError, name: () => 'output' });
}

/** Whether every row of `values` (rows × cols) is a probability vector. */
export function looksLikeProbabilities(values: ArrayLike<number>, rows: number, cols: number): boolean {
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let k = 0; k < cols; k++) {
      const v = values[r * cols + k];
      if (!(v >= 0)) return false;
      sum += v;
    }
    if (Math.abs(sum - 1) > 1e-3) return false;
  }
  return true;
}

/** Row-wise softmax in place (float64 accumulation), for logits outputs. */
export function softmaxRows(values: Float32Array, rows: number, cols: number): Float32Array {
  for (let r = 0; r < rows; r++) {
    const row = values.subarray(r * cols, (r + 1) * cols);
    let max = -Infinity;
    for (let k = 0; k < cols; k++) max = Math.max(max, row[k]);
    let sum = 0;
    for (let k = 0; k < cols; k++) sum += Math.exp(row[k] - max);
    for (let k = 0; k < cols; k++) row[k] = Math.exp(row[k] - max) / sum;
  }
  return values;
}

/** Turns raw model outputs into probabilities as `output` says; returns whether they were already probabilities. */
export function toProbabilities(values: Float32Array, rows: number, cols: number, output: SurrogateOutput): Float32Array {
  const probs = output === 'probs' || (output === 'auto' && looksLikeProbabilities(values, rows, cols));
  return probs ? values : softmaxRows(values, rows, cols);
}

/** Checks that `inputs` holds `rows` finite rows of `width` values. */
export function checkRows(inputs: Float32Array | undefined, rows: number, width: number): void {
  if (!Number.isInteger(rows) || rows < 0) throw new ModelInputError(`rows must be a non-negative integer, got ${rows}`);
  if (!inputs) throw new ModelInputError('no inputs were given, but the surrogate needs them');
  if (inputs.length !== rows * width) throw new ModelInputError(`inputs hold ${inputs.length} values; ${rows} rows of ${width} need ${rows * width}`);
  for (let i = 0; i < inputs.length; i++) {
    if (!Number.isFinite(inputs[i])) throw new ModelInputError(`input row ${Math.floor(i / width)} holds a non-finite value at position ${i % width}`);
  }
}

/** Lets the event loop run (timers, I/O) between chunks of synchronous tensor work. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Rows per chunk of surrogate work: about 128k input values (one 224×224×3 image), between 1 and 64 rows. */
export function defaultChunkRows(width: number): number {
  return Math.max(1, Math.min(64, Math.floor(131072 / Math.max(1, width))));
}

/** How a surrogate is asked for probabilities in chunks: its shape and how it reads one chunk's raw outputs. */
export interface ChunkedOutputs {
  width: number;
  classes: number;
  chunkRows: number;
  output: SurrogateOutput;
  /** The raw outputs (logits or probabilities, n × classes) of `n` rows. */
  run(chunk: Float32Array, n: number): Promise<Float32Array>;
}

/** Probabilities for `rows` rows, `chunkRows` at a time, letting the event loop run between chunks. */
export async function probabilitiesInChunks(
  inputs: Float32Array,
  rows: number,
  how: ChunkedOutputs,
): Promise<{ rows: number; cols: number; data: Float32Array }> {
  const { width, classes, chunkRows } = how;
  checkRows(inputs, rows, width);
  const data = new Float32Array(rows * classes);
  for (let start = 0; start < rows; start += chunkRows) {
    if (start > 0) await yieldToEventLoop();
    const n = Math.min(chunkRows, rows - start);
    const values = await how.run(inputs.subarray(start * width, (start + n) * width), n);
    data.set(toProbabilities(values, n, classes, how.output), start * classes);
  }
  return { rows, cols: classes, data };
}
