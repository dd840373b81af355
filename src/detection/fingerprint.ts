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
import { DetectionConfigError } from './errors.js';

export interface FingerprintConfig {
  /** Values per window (Blacklight: 20 pixels; 24 here, which keeps distinct MNIST digits apart). */
  readonly window: number;
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
  levels?: number;
  hashes?: number;
  matchThreshold?: number;
  positional?: boolean;
  positionBuckets?: number;
  seed?: number;
}

export const FINGERPRINT_DEFAULTS = { window: 24, levels: 5, hashes: 20, matchThreshold: 10, positional: true, positionBuckets: 8, seed: 0xb1ac } as const;

export function resolveFingerprintOptions(options: FingerprintOptions = {}): FingerprintConfig {
  if (typeof options !== 'object' || options === null)
    throw new DetectionConfigError('fingerprint options must be an object such as { window: 20, levels: 5, hashes: 20, matchThreshold: 10 }');
  const known = Object.keys(FINGERPRINT_DEFAULTS);
  for (const key of Object.keys(options))
    if (!known.includes(key)) throw new DetectionConfigError(`unknown fingerprint option ${key}; write one of: ${known.join(', ')}`);
  const int = (name: keyof typeof FINGERPRINT_DEFAULTS, min: number, max: number): number => {
    const value = (options as Record<string, unknown>)[name] ?? FINGERPRINT_DEFAULTS[name];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
      throw new DetectionConfigError(
        `fingerprint option ${name} must be an integer from ${min} to ${max}, e.g. ${name}: ${FINGERPRINT_DEFAULTS[name]}; got ${JSON.stringify(value)}`,
      );
    return value;
  };
  const hashes = int('hashes', 1, 255);
  const matchThreshold = int('matchThreshold', 1, 255);
  if (matchThreshold > hashes) throw new DetectionConfigError(`fingerprint option matchThreshold (${matchThreshold}) must be at most hashes (${hashes})`);
  const positional = options.positional ?? FINGERPRINT_DEFAULTS.positional;
  if (typeof positional !== 'boolean') throw new DetectionConfigError(`fingerprint option positional must be true or false; got ${JSON.stringify(positional)}`);
  return {
    window: int('window', 2, 4096),
    levels: int('levels', 2, 256),
    hashes,
    matchThreshold,
    positional,
    positionBuckets: int('positionBuckets', 1, 1024),
    seed: int('seed', 0, 2 ** 31 - 1),
  };
}

/** murmur3's finaliser. */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const BASE = 0x01000193;

/**
 * The fingerprints of `rows` rows of `cols` values: `rows × hashes` uint32 hashes, each row's sorted
 * ascending; a row with fewer distinct non-blank windows fills the rest with 0 (no hash is 0: 0 maps
 * to 1).
 */
export function fingerprintRows(config: FingerprintConfig, rows: number, cols: number, data: Float32Array): Uint32Array {
  const k = config.hashes;
  const out = new Uint32Array(rows * k);
  const w = Math.min(config.window, cols);
  // BASE^(w-1), to take the oldest value out of the rolling hash.
  let top = 1;
  for (let i = 1; i < w; i++) top = Math.imul(top, BASE);
  const q = new Uint16Array(cols);
  const kept = new Uint32Array(k);
  const span = Math.max(1, cols - w + 1);
  for (let r = 0; r < rows; r++) {
    const row = data.subarray(r * cols, (r + 1) * cols);
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < cols; i++) {
      const v = row[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    // A constant row (or one with a non-finite value) has no fingerprint.
    if (!(hi > lo) || !Number.isFinite(hi - lo)) continue;
    const scale = config.levels / (hi - lo);
    for (let i = 0; i < cols; i++) q[i] = Math.min(config.levels - 1, Math.floor((row[i] - lo) * scale));
    let count = 0;
    let hash = 0;
    let run = 0;
    for (let i = 0; i < cols; i++) {
      // Rolling: drop q[i - w], add q[i].
      if (i >= w) hash = (hash - Math.imul(q[i - w] + 1, top)) | 0;
      hash = (Math.imul(hash, BASE) + q[i] + 1) | 0;
      run = i > 0 && q[i] === q[i - 1] ? run + 1 : 1;
      if (i < w - 1 || run >= w) continue;
      const start = i - w + 1;
      let h = hash ^ config.seed;
      if (config.positional) h = Math.imul(h ^ Math.floor((start * config.positionBuckets) / span), 0x9e3779b1);
      h = fmix(h) || 1;
      // Bottom-k of the distinct hashes, kept sorted ascending.
      if (count === k && h >= kept[k - 1]) continue;
      let at = count < k ? count : k - 1;
      while (at > 0 && kept[at - 1] > h) at--;
      if (at > 0 && kept[at - 1] === h) continue;
      if (at < count && kept[at] === h) continue;
      const end = count < k ? count : k - 1;
      kept.copyWithin(at + 1, at, end);
      kept[at] = h;
      if (count < k) count++;
    }
    out.set(kept.subarray(0, count), r * k);
    kept.fill(0);
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
