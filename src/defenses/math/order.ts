/**
 * Orders classes of a float32 row by value with a native numeric sort: each key packs the value's
 * float32 bits (monotone for non-negative floats) above the class index, so ties keep the lower index
 * first and no comparator runs. Probability rows are float32 after validation, hence exact.
 */

const INDEX_BITS = 2 ** 21;
const bitsScratch = new Float32Array(1);
const bitsView = new Uint32Array(bitsScratch.buffer);

/** Largest row width the packed keys hold (2^21 classes); wider rows fall back to a comparator sort. */
export const PACKED_SORT_MAX_COLS = INDEX_BITS;

/**
 * Writes into `order` the classes of row data[offset .. offset+cols) other than `skip` (−1 for none),
 * by ascending value, lower index first on ties. Values must be non-negative. Returns how many were written.
 * `keys` is scratch of length ≥ cols.
 */
export function ascendingClasses(data: Float32Array, offset: number, cols: number, skip: number, order: Int32Array, keys: Float64Array): number {
  let n = 0;
  if (cols > INDEX_BITS) {
    for (let c = 0; c < cols; c++) if (c !== skip) order[n++] = c;
    const sorted = Array.from(order.subarray(0, n)).sort((a, b) => data[offset + a] - data[offset + b] || a - b);
    order.set(sorted);
    return n;
  }
  for (let c = 0; c < cols; c++) {
    if (c === skip) continue;
    bitsScratch[0] = data[offset + c] + 0; // + 0 turns −0 into +0, whose bits sort first
    keys[n++] = bitsView[0] * INDEX_BITS + c;
  }
  const view = keys.subarray(0, n);
  view.sort();
  for (let i = 0; i < n; i++) order[i] = view[i] % INDEX_BITS;
  return n;
}
