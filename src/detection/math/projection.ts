/**
 * A fixed, seeded, shape-agnostic reduction of an input row to `dims` numbers, so that PRADA keeps
 * bounded copies of past queries: a count sketch (each input coordinate adds ± itself to one of `dims`
 * buckets chosen by a seeded hash). It is linear, so a query and its small perturbation stay close
 * (‖P(x+δ) − P(x)‖ = ‖Pδ‖), and squared distances are preserved in expectation (Weinberger et al. 2009).
 * Rows no wider than `dims` are kept as they are (exact distances).
 */

/** murmur3's 32-bit finaliser: a well-mixed hash of (seed, index). */
function mix(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

interface Sketch {
  readonly bucket: Uint16Array;
  readonly sign: Float32Array;
}

/** Bucket and sign per input coordinate; a pure function of (cols, dims, seed), cached (few distinct shapes). */
const sketches = new Map<string, Sketch>();

function sketchFor(cols: number, dims: number, seed: number): Sketch {
  const key = `${cols}:${dims}:${seed}`;
  const cached = sketches.get(key);
  if (cached) return cached;
  const bucket = new Uint16Array(cols);
  const sign = new Float32Array(cols);
  for (let j = 0; j < cols; j++) {
    const h = mix(seed, j);
    bucket[j] = (h & 0xffff) % dims;
    sign[j] = h & 0x80000000 ? -1 : 1;
  }
  const sketch = { bucket, sign };
  if (sketches.size >= 8) sketches.delete(sketches.keys().next().value as string);
  sketches.set(key, sketch);
  return sketch;
}

/** The reduced copy of `row` (length `dims`, or `row.length` when the row is no wider). */
export function projectRow(row: Float32Array, dims: number, seed: number): Float32Array {
  if (row.length <= dims) return Float32Array.from(row);
  const { bucket, sign } = sketchFor(row.length, dims, seed);
  // Accumulate in float64 (faster in V8 than read-modify-write on float32, and exact enough).
  // A non-finite input value leaves its bucket non-finite, so checking the copy checks the row.
  const sums = new Float64Array(dims);
  for (let j = 0; j < row.length; j++) sums[bucket[j]] += sign[j] * row[j];
  return Float32Array.from(sums);
}
