/**
 * PRADA (Juuti et al., EuroS&P 2019), per client. Queries are grouped by the victim's predicted class c.
 * The first query of c starts its kept set G_c (threshold T_c = 0). For each later query x of class c,
 * d = min over g in G_c of ‖x − g‖₂ is recorded; when d > T_c, x joins G_c and
 * T_c ← max(T_c, mean − std of the distances of the kept points). Every 10 queries (at most once per
 * request) the recorded distances of classes with ≥ `minDistancesPerClass` values are pooled, values
 * beyond 3σ dropped, and when more than `minPooled` remain the Shapiro–Wilk W is computed; the client is
 * flagged when W < δ.
 *
 * Bounded memory (the paper keeps every query): kept points are reduced copies (see math/projection.ts), at
 * most `maxKeptPerClass` per class and `maxKeptPoints` in all, the oldest evicted first (from the class
 * holding the most when the total cap binds); the recorded distances are the last `maxDistances`
 * (a ring). The threshold statistics (count, sum, sum of squares of kept distances) are never evicted.
 */
import { decodeFloat32, decodeUint16, encodeFloat32, encodeUint16 } from './encoding.js';
import { projectRow } from './math/projection.js';
import { shapiroWilk } from './math/shapiro-wilk.js';
import type { DetectorVerdict } from './types.js';

export interface PradaConfig {
  readonly enabled: boolean;
  /** Flag when W < delta. */
  readonly delta: number;
  /** Dimensions of the kept copies (inputs wider than this are count-sketched). */
  readonly dims: number;
  readonly seed: number;
  readonly maxKeptPerClass: number;
  readonly maxKeptPoints: number;
  /** Recorded distances kept (a ring over all classes); also the largest Shapiro–Wilk sample. */
  readonly maxDistances: number;
  /** A class's distances join the pool once it has at least this many (paper: 10). */
  readonly minDistancesPerClass: number;
  /** The test runs when more than this many pooled distances remain (paper: 100). */
  readonly minPooled: number;
  /** Test every this many queries (paper: 10). */
  readonly testEvery: number;
}

/** One class's kept set: reduced points oldest first, and the statistics of the kept distances. */
export interface PradaClassState {
  /** base64 Float32, count × dims, oldest first. */
  readonly g: string;
  readonly count: number;
  /** Distances that admitted a point (the first point has none): count, sum, sum of squares. */
  readonly k: number;
  readonly s: number;
  readonly q: number;
  /** The running threshold T_c. */
  readonly t: number;
}

export interface PradaState {
  /** Queries seen (rows with inputs). */
  readonly n: number;
  /** Width of the kept copies (min(cols, dims)); 0 before the first query. */
  readonly width: number;
  readonly classes: Readonly<Record<string, PradaClassState>>;
  /**
   * Ring of recorded distances and their classes (base64 Float32 / Uint16), `len` used, next write at
   * `head`. It grows with use: only the `len` values recorded are stored until the ring is full
   * (`maxDistances`), so a client with few queries has a small state. (States written by earlier
   * versions hold the ring at full size from the start; they read the same.)
   */
  readonly d: string;
  readonly dc: string;
  readonly len: number;
  readonly head: number;
  /** Last test: W, p and the pooled size; W = -1 before any test. */
  readonly w: number;
  /** Lowest W of any test so far (-1 before any): evidence that outlives the distance ring. */
  readonly wMin: number;
  readonly p: number;
  readonly pooled: number;
}

export function initialPradaState(_config: PradaConfig): PradaState {
  return {
    n: 0,
    width: 0,
    classes: {},
    d: '',
    dc: '',
    len: 0,
    head: 0,
    w: -1,
    wMin: -1,
    p: -1,
    pooled: 0,
  };
}

interface WorkingClass {
  points: Float32Array;
  count: number;
  k: number;
  s: number;
  q: number;
  t: number;
  dirty: boolean;
  source: PradaClassState | undefined;
}

/** The state after these rows (inputs row-major, `cols` wide; `classes` the victim's label per row). */
export function updatePrada(
  config: PradaConfig,
  state: PradaState,
  inputs: { readonly rows: number; readonly cols: number; readonly data: Float32Array },
  labels: ArrayLike<number>,
): PradaState {
  const width = Math.min(inputs.cols, config.dims);
  // A different input width cannot be compared with the kept copies: start over.
  const base = state.width === 0 || state.width === width ? state : initialPradaState(config);
  let { len, head, n } = base;
  // Working copies at full size; what is stored is trimmed to the `len` values used (see PradaState).
  const distances = new Float32Array(config.maxDistances);
  distances.set(decodeFloat32(base.d).subarray(0, config.maxDistances));
  const distanceClasses = new Uint16Array(config.maxDistances);
  distanceClasses.set(decodeUint16(base.dc).subarray(0, config.maxDistances));
  const working = new Map<number, WorkingClass>();
  const load = (c: number): WorkingClass | undefined => {
    let w = working.get(c);
    if (w) return w;
    const source = base.classes[c];
    if (!source) return undefined;
    w = { points: decodeFloat32(source.g), count: source.count, k: source.k, s: source.s, q: source.q, t: source.t, dirty: false, source };
    working.set(c, w);
    return w;
  };
  let total = 0;
  for (const c of Object.keys(base.classes)) total += base.classes[c].count;
  const testsBefore = Math.floor(n / config.testEvery);

  for (let r = 0; r < inputs.rows; r++) {
    const c = labels[r];
    const x = projectRow(inputs.data.subarray(r * inputs.cols, (r + 1) * inputs.cols), config.dims, config.seed);
    // A non-finite input value leaves the copy non-finite, and so do huge finite ones that overflow
    // float32: such a row tells nothing and must not put Infinity (null in JSON) into the state.
    if (!allFinite(x)) continue;
    const cls = load(c);
    const d = cls && cls.count > 0 ? minDistance(cls.points, cls.count, x) : 0;
    if (!Number.isFinite(Math.fround(d))) continue;
    n++;
    if (!cls) {
      working.set(c, { points: x, count: 1, k: 0, s: 0, q: 0, t: 0, dirty: true, source: undefined });
      total++;
    } else if (cls.count === 0) {
      // Every kept point of this class was evicted by the total cap: start its set again.
      cls.points = x;
      cls.count = 1;
      cls.dirty = true;
      total++;
    } else {
      distances[head] = d;
      distanceClasses[head] = c;
      head = (head + 1) % config.maxDistances;
      if (len < config.maxDistances) len++;
      if (d > cls.t) {
        cls.k++;
        cls.s += d;
        cls.q += d * d;
        const mean = cls.s / cls.k;
        const std = Math.sqrt(Math.max(0, cls.q / cls.k - mean * mean));
        cls.t = Math.max(cls.t, mean - std);
        if (cls.count >= config.maxKeptPerClass) {
          cls.points = dropOldest(cls.points, width);
          cls.count--;
          total--;
        }
        cls.points = append(cls.points, x);
        cls.count++;
        total++;
      }
      cls.dirty = true;
    }
    while (total > config.maxKeptPoints) {
      const victim = largestClass(base, working);
      const w = load(victim)!;
      w.points = dropOldest(w.points, width);
      w.count--;
      w.dirty = true;
      total--;
    }
  }

  const classes: Record<string, PradaClassState> = { ...base.classes };
  for (const [c, w] of working) {
    if (!w.dirty) continue;
    if (w.count === 0 && w.k === 0) delete classes[c];
    else classes[c] = { g: encodeFloat32(w.points), count: w.count, k: w.k, s: w.s, q: w.q, t: w.t };
  }
  let { w, wMin, p, pooled } = base;
  if (Math.floor(n / config.testEvery) > testsBefore) {
    const test = pooledTest(config, distances, distanceClasses, len);
    if (test) {
      ({ w, p, pooled } = test);
      wMin = wMin < 0 ? w : Math.min(wMin, w);
    }
  }
  // Until the ring is full, head === len: the used values are the first len.
  const used = len < config.maxDistances ? len : config.maxDistances;
  return {
    n,
    width,
    classes,
    d: encodeFloat32(distances.subarray(0, used)),
    dc: encodeUint16(distanceClasses.subarray(0, used)),
    len,
    head,
    w,
    wMin,
    p,
    pooled,
  };
}

function allFinite(row: Float32Array): boolean {
  for (let i = 0; i < row.length; i++) if (row[i] - row[i] !== 0) return false;
  return true;
}

function minDistance(points: Float32Array, count: number, x: Float32Array): number {
  const dims = x.length;
  let best = Infinity;
  for (let i = 0; i < count; i++) {
    let sum = 0;
    const offset = i * dims;
    for (let j = 0; j < dims && sum < best; j++) {
      const diff = points[offset + j] - x[j];
      sum += diff * diff;
    }
    if (sum < best) best = sum;
  }
  return Math.sqrt(best);
}

function dropOldest(points: Float32Array, width: number): Float32Array {
  return points.slice(width);
}

function append(points: Float32Array, x: Float32Array): Float32Array {
  const out = new Float32Array(points.length + x.length);
  out.set(points);
  out.set(x, points.length);
  return out;
}

/** The class holding the most kept points (ties: the smallest class number). */
function largestClass(base: PradaState, working: Map<number, WorkingClass>): number {
  let best = -1;
  let bestCount = -1;
  const counts = new Map<number, number>();
  for (const c of Object.keys(base.classes)) counts.set(Number(c), base.classes[c].count);
  for (const [c, w] of working) counts.set(c, w.count);
  for (const [c, count] of counts) {
    if (count > bestCount || (count === bestCount && c < best)) {
      best = c;
      bestCount = count;
    }
  }
  return best;
}

/** Pool, drop 3σ outliers, and run Shapiro–Wilk when enough remain; undefined when no test is possible. */
export function pooledTest(
  config: Pick<PradaConfig, 'minDistancesPerClass' | 'minPooled'>,
  distances: Float32Array,
  classes: Uint16Array,
  len: number,
): { w: number; p: number; pooled: number } | undefined {
  const perClass = new Map<number, number>();
  for (let i = 0; i < len; i++) perClass.set(classes[i], (perClass.get(classes[i]) ?? 0) + 1);
  const pool = new Float64Array(len);
  let size = 0;
  let mean = 0;
  for (let i = 0; i < len; i++) {
    if (perClass.get(classes[i])! >= config.minDistancesPerClass) {
      pool[size++] = distances[i];
      mean += distances[i];
    }
  }
  if (size <= config.minPooled) return undefined;
  mean /= size;
  let variance = 0;
  for (let i = 0; i < size; i++) variance += (pool[i] - mean) * (pool[i] - mean);
  const limit = 3 * Math.sqrt(variance / size);
  let keptCount = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < size; i++) {
    const d = pool[i];
    if (Math.abs(d - mean) > limit) continue;
    pool[keptCount++] = d;
    if (d < lo) lo = d;
    if (d > hi) hi = d;
  }
  if (keptCount <= config.minPooled) return undefined;
  const kept = pool.subarray(0, keptCount);
  // All equal (e.g. the same input over and over): W is undefined; leave the last verdict.
  if (!(hi > lo)) return undefined;
  const result = shapiroWilk(kept);
  return { w: result.w, p: result.p, pooled: kept.length };
}

/** The verdict and the policy level (≥ 1 flagged; (1 − W)/(1 − δ)). */
export function pradaVerdict(config: PradaConfig, state: PradaState): { verdict: DetectorVerdict; level: number } {
  let kept = 0;
  for (const c of Object.keys(state.classes)) kept += state.classes[c].count;
  const tested = state.w >= 0;
  const evidence: Record<string, number> = { queries: state.n, keptPoints: kept, distances: state.len, pooled: state.pooled };
  if (tested) {
    evidence.w = state.w;
    evidence.p = state.p;
    evidence.wMin = state.wMin;
  }
  const flagged = tested && state.w < config.delta;
  return {
    verdict: { detector: 'prada', flagged, score: tested ? 1 - state.w : 0, evidence },
    level: tested ? (1 - state.w) / (1 - config.delta) : 0,
  };
}
