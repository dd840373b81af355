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

/**
 * How deep a request's arrays may nest: a tensor of rank 32 is already far past any model's input
 * (an image batch is rank 4 or 5), and the readers below walk the nesting without recursion anyway.
 */
export const MAX_NESTING = 32;

/** Why flattenNumbers stopped: a value that is neither a number nor an array, or arrays nested deeper than allowed. */
export type FlattenProblem = 'not-numbers' | 'too-deep';

/**
 * Appends the numbers of a (possibly nested) JSON array to `out`, in order. Iterative, with an
 * explicit stack: a body nested 10,000 levels deep costs no call stack, and is refused past
 * `maxDepth` levels of arrays. Returns undefined when done, or the problem that stopped it.
 */
export function flattenNumbers(value: unknown, out: number[], maxDepth = MAX_NESTING): FlattenProblem | undefined {
  if (typeof value === 'number') {
    out.push(value);
    return undefined;
  }
  if (!Array.isArray(value)) return 'not-numbers';
  const arrays: unknown[][] = [value];
  const positions: number[] = [0];
  while (arrays.length > 0) {
    const top = arrays.length - 1;
    const array = arrays[top];
    const i = positions[top];
    if (i === array.length) {
      arrays.pop();
      positions.pop();
      continue;
    }
    positions[top] = i + 1;
    const item: unknown = array[i];
    if (typeof item === 'number') {
      out.push(item);
    } else if (Array.isArray(item)) {
      if (arrays.length >= maxDepth) return 'too-deep';
      arrays.push(item);
      positions.push(0);
    } else {
      return 'not-numbers';
    }
  }
  return undefined;
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

/** The shape of a nested array, read along its first elements ([] for a number). */
export function nestedShape(value: unknown): number[] {
  const shape: number[] = [];
  for (let v = value; Array.isArray(v); v = v[0]) shape.push(v.length);
  return shape;
}

/** Flattens each input row (an image may be nested 28×28×1) into one Float32Array, with row 0's nesting as the example shape; a message on failure. */
export function inputsToRows(rows: readonly unknown[]): { rows: number; cols: number; data: Float32Array; shape?: number[] } | string {
  if (rows.length === 0) return 'no input rows';
  const direct = flatRows(rows);
  if (direct) return direct;
  const flat: number[][] = [];
  for (let r = 0; r < rows.length; r++) {
    const values: number[] = [];
    const problem = flattenNumbers(rows[r], values);
    if (problem === 'too-deep') return `input row ${r} is nested deeper than ${MAX_NESTING} levels`;
    if (problem) return `input row ${r} is not a (nested) array of numbers`;
    if (r > 0 && values.length !== flat[0].length) return `input row ${r} has ${values.length} values, expected ${flat[0].length} like row 0`;
    flat.push(values);
  }
  const cols = flat[0].length;
  if (cols === 0) return 'input row 0 is empty';
  const data = new Float32Array(rows.length * cols);
  flat.forEach((values, r) => data.set(values, r * cols));
  const shape = nestedShape(rows[0]);
  // A ragged row 0 has no shape worth passing on.
  return shape.reduce((a, b) => a * b, 1) === cols ? { rows: rows.length, cols, data, shape } : { rows: rows.length, cols, data };
}

/** The common case, rows that are flat lists of numbers of one length, straight into float32; undefined otherwise (the general path words the error). */
function flatRows(rows: readonly unknown[]): { rows: number; cols: number; data: Float32Array; shape: number[] } | undefined {
  const first = rows[0];
  if (!Array.isArray(first) || first.length === 0) return undefined;
  const cols = first.length;
  const data = new Float32Array(rows.length * cols);
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    if (!Array.isArray(row) || row.length !== cols) return undefined;
    for (let c = 0; c < cols; c++) {
      const v: unknown = row[c];
      if (typeof v !== 'number') return undefined;
      data[r * cols + c] = v;
    }
  }
  return { rows: rows.length, cols, data, shape: [cols] };
}

/** The base64 text of an encoded image as sent: a string, or TF Serving's {"b64": "..."}; undefined otherwise. */
export function encodedImageText(value: unknown, allowPlainString: boolean): string | undefined {
  if (typeof value === 'string') return allowPlainString ? value : undefined;
  if (isRecord(value) && typeof value.b64 === 'string' && Object.keys(value).length === 1) return value.b64;
  return undefined;
}

/** Whether a row looks like an encoded image (so the rows are read as images, not numbers). */
export function looksEncoded(value: unknown): boolean {
  return typeof value === 'string' || (isRecord(value) && 'b64' in value);
}

/** Each row as the base64 text of one image; a message naming the first row that is not one. */
export function rowsToImages(
  rows: readonly unknown[],
  allowPlainString: boolean,
  where: string,
): { kind: 'encoded-images'; rows: number; images: string[]; where: string } | string {
  if (rows.length === 0) return 'no input rows';
  const images: string[] = [];
  for (let r = 0; r < rows.length; r++) {
    const text = encodedImageText(rows[r], allowPlainString);
    if (text === undefined)
      return `input row ${r} is not an encoded image like row 0 (${allowPlainString ? 'a base64 string' : 'write {"b64": "<base64 JPEG or PNG>"}'})`;
    images.push(text);
  }
  return { kind: 'encoded-images', rows: rows.length, images, where };
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
