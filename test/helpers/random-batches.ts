/** Reproducible random probability batches for tests: a seed, a shape and a sharpness. */
import type { ProbBatch } from '../../src/defenses/index.js';
import { seededRandom } from '../../src/models/random.js';

export { seededRandom };

/**
 * Rows = softmax(sharpness · z) with z uniform in [-1, 1]; `zeros` sets some entries to exactly 0
 * (as label-only or top-k answers do), keeping at least one positive entry per row.
 */
export function randomBatch(seed: number, rows: number, cols: number, sharpness = 4, zeros = false): ProbBatch {
  const random = seededRandom(seed);
  const data = new Float32Array(rows * cols);
  const row = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let c = 0; c < cols; c++) {
      row[c] = sharpness * (2 * random() - 1);
      if (row[c] > max) max = row[c];
    }
    let sum = 0;
    const keep = Math.floor(random() * cols);
    for (let c = 0; c < cols; c++) {
      row[c] = zeros && c !== keep && random() < 0.3 ? 0 : Math.exp(row[c] - max);
      sum += row[c];
    }
    for (let c = 0; c < cols; c++) data[r * cols + c] = row[c] / sum;
  }
  return { rows, cols, data };
}

export function rowOf(batch: ProbBatch, r: number): number[] {
  return Array.from(batch.data.subarray(r * batch.cols, (r + 1) * batch.cols));
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
