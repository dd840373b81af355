/**
 * Probability-batch basics shared by every defense: building and reading batches, validation,
 * softmax, top-1, distances. Everything works on row-major Float32Array batches.
 */
import { InvalidBatchError } from '../errors.js';
import type { ProbBatch } from '../types.js';

/** Largest tolerated |Σ row − 1| for a probability row (then renormalised exactly). */
export const SUM_TOLERANCE = 1e-3;

export type InputFormat = 'probs' | 'logits';

export function batchFromRows(rows: readonly (readonly number[])[]): ProbBatch {
  if (!Array.isArray(rows) || rows.length === 0) throw new InvalidBatchError('the batch is empty');
  const first = rows[0];
  if (!Array.isArray(first)) throw new InvalidBatchError('expected an array of numbers', 0);
  const cols = first.length;
  const data = new Float32Array(rows.length * cols);
  rows.forEach((row, r) => {
    if (!Array.isArray(row)) throw new InvalidBatchError('expected an array of numbers', r);
    if (row.length !== cols) throw new InvalidBatchError(`has ${row.length} entries, expected ${cols} like row 0`, r);
    for (let c = 0; c < cols; c++) {
      const value = row[c];
      if (typeof value !== 'number') throw new InvalidBatchError(`entry ${c} is not a number`, r);
      data[r * cols + c] = value;
    }
  });
  return { rows: rows.length, cols, data };
}

export function batchToRows(batch: ProbBatch): number[][] {
  const out: number[][] = new Array(batch.rows);
  for (let r = 0; r < batch.rows; r++) out[r] = Array.from(batch.data.subarray(r * batch.cols, (r + 1) * batch.cols));
  return out;
}

/** Index of the largest entry of each row (first one on ties). */
export function argmaxRows(batch: ProbBatch): Int32Array {
  const out = new Int32Array(batch.rows);
  for (let r = 0; r < batch.rows; r++) out[r] = argmaxAt(batch.data, r * batch.cols, batch.cols);
  return out;
}

export function argmaxAt(data: ArrayLike<number>, offset: number, cols: number): number {
  let best = 0;
  let bestValue = data[offset];
  for (let c = 1; c < cols; c++) {
    if (data[offset + c] > bestValue) {
      bestValue = data[offset + c];
      best = c;
    }
  }
  return best;
}

function checkShape(batch: ProbBatch): void {
  if (!batch || !(batch.data instanceof Float32Array)) throw new InvalidBatchError('the batch data must be a Float32Array');
  if (!Number.isInteger(batch.rows) || batch.rows < 1) throw new InvalidBatchError('the batch is empty');
  if (!Number.isInteger(batch.cols) || batch.cols < 2) throw new InvalidBatchError(`a row needs at least 2 classes, got ${batch.cols}`);
  if (batch.data.length !== batch.rows * batch.cols) {
    throw new InvalidBatchError(`the batch holds ${batch.data.length} values, expected rows×cols = ${batch.rows}×${batch.cols}`);
  }
}

/**
 * Checks that every row is a probability vector (finite, non-negative, sums to 1 within
 * SUM_TOLERANCE) and returns a copy renormalised to sum exactly to 1, or, for logits, the
 * row-wise softmax. Throws InvalidBatchError naming the first bad row.
 */
export function toProbabilities(batch: ProbBatch, format: InputFormat = 'probs'): ProbBatch {
  checkShape(batch);
  const { rows, cols, data } = batch;
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) {
      if (!Number.isFinite(data[o + c])) throw new InvalidBatchError(`entry ${c} is ${data[o + c]}; values must be finite`, r);
    }
    if (format === 'logits') {
      softmaxInto(data, o, cols, out);
      continue;
    }
    let sum = 0;
    for (let c = 0; c < cols; c++) {
      const v = data[o + c];
      if (v < 0) throw new InvalidBatchError(`entry ${c} is negative (${v}); probabilities must be >= 0`, r);
      sum += v;
    }
    if (Math.abs(sum - 1) > SUM_TOLERANCE) {
      throw new InvalidBatchError(`sums to ${sum.toPrecision(6)}, expected 1 (within ${SUM_TOLERANCE}); pass logits with inputFormat "logits"`, r);
    }
    for (let c = 0; c < cols; c++) out[o + c] = data[o + c] / sum;
  }
  return { rows, cols, data: out };
}

/** Numerically stable softmax of data[offset..offset+cols) written to out at the same offset. */
export function softmaxInto(data: ArrayLike<number>, offset: number, cols: number, out: Float32Array | Float64Array): void {
  let max = -Infinity;
  for (let c = 0; c < cols; c++) if (data[offset + c] > max) max = data[offset + c];
  let sum = 0;
  for (let c = 0; c < cols; c++) sum += Math.exp(data[offset + c] - max);
  for (let c = 0; c < cols; c++) out[offset + c] = Math.exp(data[offset + c] - max) / sum;
}

/** Checks that a context batch (surrogate or misinformation softmax) matches the batch it serves. */
export function checkCompanion(companion: ProbBatch, batch: ProbBatch, what: string): ProbBatch {
  if (companion.rows !== batch.rows || companion.cols !== batch.cols) {
    throw new InvalidBatchError(`${what} is ${companion.rows}×${companion.cols}, expected ${batch.rows}×${batch.cols} like the batch`);
  }
  try {
    return toProbabilities(companion, 'probs');
  } catch (error) {
    if (error instanceof InvalidBatchError) throw new InvalidBatchError(`${what}: ${error.message}`);
    throw error;
  }
}

export type DistanceNorm = 'l1' | 'l2' | 'kl';

/** dist(y, z) between two rows; KL is KL(y‖z) with 0·log 0 = 0. */
export function rowDistance(norm: DistanceNorm, y: ArrayLike<number>, yOffset: number, z: ArrayLike<number>, zOffset: number, cols: number): number {
  let acc = 0;
  if (norm === 'l1') {
    for (let c = 0; c < cols; c++) acc += Math.abs(y[yOffset + c] - z[zOffset + c]);
    return acc;
  }
  if (norm === 'l2') {
    for (let c = 0; c < cols; c++) {
      const d = y[yOffset + c] - z[zOffset + c];
      acc += d * d;
    }
    return Math.sqrt(acc);
  }
  for (let c = 0; c < cols; c++) {
    const p = y[yOffset + c];
    if (p <= 0) continue;
    const q = z[zOffset + c];
    if (q <= 0) return Infinity;
    acc += p * Math.log(p / q);
  }
  return Math.max(0, acc);
}

/** The utility cost of a perturbation, per row: L1 distance and whether the top-1 label changed. */
export function utilityCost(before: ProbBatch, after: ProbBatch): { l1: Float64Array; top1Changed: Uint8Array } {
  if (before.rows !== after.rows || before.cols !== after.cols) {
    throw new InvalidBatchError(`cannot compare a ${before.rows}×${before.cols} batch with a ${after.rows}×${after.cols} one`);
  }
  const l1 = new Float64Array(before.rows);
  const top1Changed = new Uint8Array(before.rows);
  for (let r = 0; r < before.rows; r++) {
    const o = r * before.cols;
    l1[r] = rowDistance('l1', before.data, o, after.data, o, before.cols);
    top1Changed[r] = argmaxAt(before.data, o, before.cols) === argmaxAt(after.data, o, after.cols) ? 0 : 1;
  }
  return { l1, top1Changed };
}

/**
 * Makes `target` the unique top-1 of a float32 row after rounding, by moving the smallest
 * representable amounts of mass from any rival to it (the row sum is unchanged). Needed because
 * rounding float64 results to float32 can tie two entries that differed by less than one ulp.
 */
export function enforceTop1(out: Float32Array, offset: number, cols: number, target: number): void {
  for (let guard = 0; guard < 64; guard++) {
    let rival = -1;
    for (let c = 0; c < cols; c++) {
      if (c === target) continue;
      if (out[offset + c] > out[offset + target] || (out[offset + c] === out[offset + target] && c < target)) {
        rival = c;
        break;
      }
    }
    if (rival < 0) return;
    const gap = out[offset + rival] - out[offset + target];
    const step = Math.max(gap, ulp32(out[offset + rival]));
    out[offset + rival] = Math.max(0, out[offset + rival] - step);
    out[offset + target] += step;
  }
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);
function ulp32(value: number): number {
  scratch[0] = Math.abs(value);
  const base = scratch[0];
  scratchBits[0] += 1;
  return scratch[0] - base;
}
