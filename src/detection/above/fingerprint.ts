/**
 * Query fingerprints in the manner of Blacklight (Li et al., USENIX Security 2022): a query's pixels
 * are quantised, a window slides over them, each window is hashed, and the query keeps the `hashes`
 * smallest distinct window hashes (a bottom-k sketch of its set of windows). Two queries whose
 * sketches share `matchThreshold` hashes are near-duplicates (a query and its small perturbation, as
 * a Jacobian-based augmentation or an adversarial search sends). The serving layer keeps one store of
 * fingerprints across all identities and counts, per query, whether it matches another identity's.
 *
 * Pure and cheap: one pass over the row (a rolling hash), no allocation beyond the output.
 * - The row is scaled to its own range before quantising into `levels` (so 0..1 and 0..255 inputs
 *   fingerprint alike); a constant row has no fingerprint.
 * - Windows of one quantised level throughout (a blank background) are skipped: every image has them.
 * - With `positional` the window's coarse position (which `positionBuckets`-th of the row it starts
 *   in) is hashed too: a small perturbation keeps positions, while two different images drawn alike at
 *   different places (two handwritten ones) no longer match. On by default.
 */
import { z } from 'zod';
import { joinPath, numberIn, optionStyle, parseOptions, trueOrFalse } from '../../validation/index.js';
import { DetectionConfigError } from '../errors.js';

export interface FingerprintConfig {
  /** Values per window, after pooling (Blacklight: 20 pixels). */
  readonly window: number;
  /** Consecutive values averaged into one before quantising (1: none): a shorter row to hash, and steadier under small changes. */
  readonly pool: number;
  /**
   * Windows with fewer changes of level between neighbours are skipped: blank and nearly blank
   * windows (a background with the edge of one stroke) are shared by most images of a domain, and
   * would make distinct images match.
   */
  readonly minChanges: number;
  /** Quantisation levels over the row's range (Blacklight: 256/50 ≈ 5). */
  readonly levels: number;
  /** Hashes kept per query (Blacklight: 50). */
  readonly hashes: number;
  /** Shared hashes for two queries to match (Blacklight: 25 of 50). */
  readonly matchThreshold: number;
  /** Hash the window's coarse position too. */
  readonly positional: boolean;
  readonly positionBuckets: number;
  readonly seed: number;
}

export interface FingerprintOptions {
  window?: number;
  pool?: number;
  minChanges?: number;
  levels?: number;
  hashes?: number;
  matchThreshold?: number;
  positional?: boolean;
  positionBuckets?: number;
  seed?: number;
}

export const FINGERPRINT_DEFAULTS = {
  window: 12,
  pool: 3,
  minChanges: 5,
  levels: 5,
  hashes: 20,
  matchThreshold: 10,
  positional: true,
  positionBuckets: 8,
  seed: 0xb1ac,
} as const;

/** An integer option in [min, max], its error saying what to write with an example: "an integer from 2 to 4096, e.g. window: 12". */
const int = (key: keyof FingerprintOptions, min: number, max: number) =>
  numberIn({ integer: true, min, max }, `an integer from ${min} to ${max}, e.g. ${key}: ${FINGERPRINT_DEFAULTS[key]}`).default(
    FINGERPRINT_DEFAULTS[key] as number,
  );

/** The shape of FingerprintOptions; matchThreshold ≤ hashes is checked after it. */
const fingerprintSchema = z.strictObject(
  {
    window: int('window', 2, 4096),
    pool: int('pool', 1, 64),
    minChanges: int('minChanges', 1, 4096),
    levels: int('levels', 2, 256),
    hashes: int('hashes', 1, 255),
    matchThreshold: int('matchThreshold', 1, 255),
    positional: trueOrFalse().default(FINGERPRINT_DEFAULTS.positional),
    positionBuckets: int('positionBuckets', 1, 1024),
    seed: int('seed', 0, 2 ** 31 - 1),
  } satisfies Record<keyof FingerprintOptions, z.ZodType>,
  { error: 'an object such as { window: 20, levels: 5, hashes: 20, matchThreshold: 10 }' },
);

const style = optionStyle(DetectionConfigError, '', {
  name: (path) => (path.length ? `fingerprint option ${joinPath('', path)}` : 'fingerprint options'),
  unknownKeys: (_name, keys, allowed) => `unknown fingerprint option ${keys[0]}; write one of: ${allowed.join(', ')}`,
});

/** Validated options with defaults; each mistake says what to write. */
export function resolveFingerprintOptions(options: FingerprintOptions = {}): FingerprintConfig {
  const config = parseOptions(fingerprintSchema, options, style);
  if (config.matchThreshold > config.hashes)
    throw new DetectionConfigError(`fingerprint option matchThreshold (${config.matchThreshold}) must be at most hashes (${config.hashes})`);
  return config;
}

/** murmur3's finaliser, as a signed 32-bit integer (kept in V8's small-integer range: no doubles in the loop). */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

const BASE = 0x01000193;

/**
 * The pooled and quantised row, its window hashes and the candidates for its bottom-k: reused between
 * calls (synchronous, so never shared by two at once).
 */
let scratch = new Uint16Array(1024);
let pooled = new Float64Array(1024);
let windowHashes = new Int32Array(1024);
let candidates = new Int32Array(1024);

/**
 * The `k` smallest distinct of hashes[0, m), ascending, into out[base, base + k) (0 for those
 * missing). The hashes are close to uniform over the 32-bit range, so a threshold expected to let
 * about 2k + 8 of them through nearly always leaves k distinct ones: those are sorted, not all m
 * (a sorted insertion of each in turn costs more than the hashing). With too few (repeated
 * windows), the threshold is raised until all are taken.
 */
function bottomK(hashes: Int32Array, m: number, k: number, out: Int32Array, base: number): void {
  for (let expected = 2 * k + 8; ; expected *= 4) {
    const all = expected >= m;
    const threshold = all ? Infinity : -2147483648 + (expected / m) * 4294967296;
    let c = 0;
    for (let i = 0; i < m; i++) {
      const h = hashes[i];
      if (h < threshold) candidates[c++] = h;
    }
    const sorted = candidates.subarray(0, c).sort();
    let d = 0;
    for (let i = 0; i < c && d < k; i++) {
      const h = sorted[i];
      if (d === 0 || h !== out[base + d - 1]) out[base + d++] = h;
    }
    if (d === k || all) {
      out.fill(0, base + d, base + k);
      return;
    }
  }
}

/**
 * The fingerprints of `rows` rows of `cols` values: `rows × hashes` 32-bit hashes (signed), each row's sorted
 * ascending; a row with fewer distinct non-blank windows fills the rest with 0 (no hash is 0: 0 maps
 * to 1). Written into `into` when given (rows × hashes long, a buffer the caller reuses).
 */
export function fingerprintRows(config: FingerprintConfig, rows: number, cols: number, data: Float32Array, into?: Int32Array): Int32Array {
  const k = config.hashes;
  if (into && into.length !== rows * k) throw new RangeError(`fingerprintRows: into holds ${into.length} values, not rows × hashes = ${rows * k}`);
  const out = into ?? new Int32Array(rows * k);
  const p = config.pool;
  // The pooled row's length: consecutive values averaged `pool` at a time.
  const n = Math.ceil(cols / p);
  const w = Math.min(config.window, n);
  // BASE^(w-1), to take the oldest value out of the rolling hash.
  let top = 1;
  for (let i = 1; i < w; i++) top = Math.imul(top, BASE);
  if (scratch.length < n) {
    scratch = new Uint16Array(n);
    pooled = new Float64Array(n);
    windowHashes = new Int32Array(n);
    candidates = new Int32Array(n);
  }
  const q = scratch;
  const sums = pooled;
  const hashes = windowHashes;
  const span = Math.max(1, n - w + 1);
  const levels = config.levels;
  const maxLevel = levels - 1;
  const seed = config.seed;
  const minChanges = config.minChanges;
  const buckets = config.positional ? config.positionBuckets : 0;
  // Groups of `pool` values; a last, shorter group (cols not a multiple of pool) is scaled up to a full one.
  const full = Math.floor(cols / p);
  for (let r = 0; r < rows; r++) {
    const offset = r * cols;
    let lo = Infinity;
    let hi = -Infinity;
    // Pooled values are sums (the quantisation is relative to the row's own range), added in the
    // row's order; the common pool sizes unrolled.
    if (p === 1) {
      for (let j = 0; j < n; j++) {
        const v = data[offset + j];
        sums[j] = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    } else if (p === 3) {
      for (let j = 0, from = offset; j < full; j++, from += 3) {
        const v = data[from] + data[from + 1] + data[from + 2];
        sums[j] = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    } else if (p === 2) {
      for (let j = 0, from = offset; j < full; j++, from += 2) {
        const v = data[from] + data[from + 1];
        sums[j] = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    } else {
      for (let j = 0, from = offset; j < full; j++, from += p) {
        let v = data[from];
        for (let i = 1; i < p; i++) v += data[from + i];
        sums[j] = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (full < n) {
      const from = offset + full * p;
      const to = offset + cols;
      let v = data[from];
      for (let i = from + 1; i < to; i++) v += data[i];
      v = (v * p) / (to - from);
      sums[full] = v;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    // A constant row (or one with a non-finite value) has no fingerprint.
    if (!(hi > lo) || !Number.isFinite(hi - lo)) {
      if (into) out.fill(0, r * k, (r + 1) * k);
      continue;
    }
    const scale = levels / (hi - lo);
    // The row's window hashes (those with enough changes of level).
    let m = 0;
    let hash = 0;
    // Changes of level between neighbours inside the current window.
    let changes = 0;
    // The window's position bucket, floor(start · buckets / span), advanced without a division.
    let bucket = 0;
    let bound = span;
    for (let i = 0; i < n; i++) {
      // Quantised as the window reaches it (non-negative, so `| 0` is the floor).
      const level = ((sums[i] - lo) * scale) | 0;
      const value = level > maxLevel ? maxLevel : level;
      q[i] = value;
      // Rolling: drop q[i - w], add q[i].
      if (i >= w) {
        hash = (hash - Math.imul(q[i - w] + 1, top)) | 0;
        // The change between the value leaving the window and the next one leaves with it.
        if (q[i - w + 1] !== q[i - w]) changes--;
      }
      hash = (Math.imul(hash, BASE) + value + 1) | 0;
      if (i > 0 && value !== q[i - 1]) changes++;
      if (i < w - 1 || changes < minChanges) continue;
      let h = hash ^ seed;
      if (buckets > 0) {
        const scaled = (i - w + 1) * buckets;
        while (scaled >= bound) {
          bucket++;
          bound += span;
        }
        h = Math.imul(h ^ bucket, 0x9e3779b1);
      }
      hashes[m++] = fmix(h) || 1;
    }
    bottomK(hashes, m, k, out, r * k);
  }
  return out;
}

/** Hashes two sorted fingerprints share (0 entries ignored). */
export function sharedHashes(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let i = 0;
  let j = 0;
  let shared = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === 0) {
      i++;
      continue;
    }
    if (b[j] === 0) {
      j++;
      continue;
    }
    if (a[i] === b[j]) {
      shared++;
      i++;
      j++;
    } else if (a[i] < b[j]) i++;
    else j++;
  }
  return shared;
}
