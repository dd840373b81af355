/** Reading numeric tensors out of JSON and writing float32 results back compactly. */
import type { ProbBatch } from '../../defenses/index.js';

const MIN_NORMAL_FLOAT32 = 1.1754943508222875e-38;

/** The shortest decimal that reads back as the same float32 (0.06, not 0.059999994933605194). */
export function shortestFloat32(value: number): number {
  const target = Math.fround(value);
  // A normal float32 is within 6e-8 (relative) of its shortest decimal, well inside half a unit of the
  // 6th digit, so 6 digits reproduce any shorter decimal with trailing zeros: start there. Subnormals
  // carry fewer digits and start at 1.
  const first = Math.abs(target) < MIN_NORMAL_FLOAT32 ? 1 : 6;
  for (let digits = first; digits <= 9; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === target) return candidate;
  }
  return value;
}

/** Appends the numbers of a (possibly nested) JSON array to `out`; returns false on anything that is not a number or an array. */
export function flattenNumbers(value: unknown, out: number[]): boolean {
  if (typeof value === 'number') {
    out.push(value);
    return true;
  }
  if (!Array.isArray(value)) return false;
  for (const item of value) if (!flattenNumbers(item, out)) return false;
  return true;
}

/** Row r of a batch as compact JSON numbers. */
export function rowNumbers(batch: ProbBatch, r: number): number[] {
  const out = new Array<number>(batch.cols);
  const offset = r * batch.cols;
  for (let c = 0; c < batch.cols; c++) out[c] = shortestFloat32(batch.data[offset + c]);
  return out;
}

export function batchRows(batch: ProbBatch): number[][] {
  const out = new Array<number[]>(batch.rows);
  for (let r = 0; r < batch.rows; r++) out[r] = rowNumbers(batch, r);
  return out;
}

export function batchFlat(batch: ProbBatch): number[] {
  const out = new Array<number>(batch.data.length);
  for (let i = 0; i < batch.data.length; i++) out[i] = shortestFloat32(batch.data[i]);
  return out;
}

/**
 * Builds a batch from rows that are each a numeric array of the same length.
 * Returns a message describing the first problem instead of throwing, so each codec words its own error.
 */
export function rowsToBatch(rows: readonly unknown[]): ProbBatch | string {
  if (rows.length === 0) return 'no rows';
  const first = rows[0];
  if (!Array.isArray(first)) return 'row 0 is not an array of numbers';
  const cols = first.length;
  if (cols < 2) return `row 0 has ${cols} entries; a probability row needs at least 2 classes`;
  const data = new Float32Array(rows.length * cols);
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    if (!Array.isArray(row)) return `row ${r} is not an array of numbers`;
    if (row.length !== cols) return `row ${r} has ${row.length} entries, expected ${cols} like row 0`;
    for (let c = 0; c < cols; c++) {
      const value = row[c];
      if (typeof value !== 'number') return `row ${r} entry ${c} is not a number`;
      data[r * cols + c] = value;
    }
  }
  return { rows: rows.length, cols, data };
}

/** Flattens each input row (an image may be nested 28×28×1) into one Float32Array; a message on failure. */
export function inputsToRows(rows: readonly unknown[]): { rows: number; cols: number; data: Float32Array } | string {
  if (rows.length === 0) return 'no input rows';
  const flat: number[][] = [];
  for (let r = 0; r < rows.length; r++) {
    const values: number[] = [];
    if (!flattenNumbers(rows[r], values)) return `input row ${r} is not a (nested) array of numbers`;
    if (r > 0 && values.length !== flat[0].length) return `input row ${r} has ${values.length} values, expected ${flat[0].length} like row 0`;
    flat.push(values);
  }
  const cols = flat[0].length;
  if (cols === 0) return 'input row 0 is empty';
  const data = new Float32Array(rows.length * cols);
  flat.forEach((values, r) => data.set(values, r * cols));
  return { rows: rows.length, cols, data };
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
