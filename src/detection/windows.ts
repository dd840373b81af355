/**
 * Per-client counts over a sliding window made of time buckets (expired by the time passed in): queries,
 * low-confidence queries and a 10-bin histogram of the victim's confidence (max probability); plus the
 * victim's class histogram, decayed exponentially with the window length as time constant (one vector of
 * K numbers instead of one per bucket). Feeds the out-of-distribution detector and the query budget.
 */
import type { ProbBatch } from '../defenses/types.js';
import type { DetectorVerdict } from './types.js';

export const CONFIDENCE_BINS = 10;

export interface WindowConfig {
  readonly lengthMs: number;
  readonly bucketMs: number;
}

export interface OodConfig {
  readonly enabled: boolean;
  /** A query is low-confidence when the victim's max probability is below this. */
  readonly confidenceThreshold: number;
  /** Flag when the window's low-confidence fraction exceeds this. */
  readonly maxRate: number;
  /** No verdict before this many queries in the window. */
  readonly minQueries: number;
}

export interface WindowState {
  /** Buckets oldest first: [start, queries, lowConfidence, confidence bin 0 … 9]. */
  readonly b: readonly (readonly number[])[];
  /** Decayed class histogram, as of time `ct` (rounded to 1e-4 to keep the state small). */
  readonly h: readonly number[];
  readonly ct: number;
}

export function initialWindowState(time: number): WindowState {
  return { b: [], h: [], ct: time };
}

/** Buckets still inside the window at `time` (a bucket counts while its start is within lengthMs). */
function live(config: WindowConfig, state: WindowState, time: number): (readonly number[])[] {
  return state.b.filter((bucket) => bucket[0] > time - config.lengthMs);
}

export function updateWindows(config: WindowConfig, ood: OodConfig, state: WindowState, time: number, probs: ProbBatch): WindowState {
  const buckets = live(config, state, time);
  const start = Math.floor(time / config.bucketMs) * config.bucketMs;
  let current: number[];
  if (buckets.length && buckets[buckets.length - 1][0] === start) current = [...buckets.pop()!];
  else current = [start, 0, 0, ...new Array(CONFIDENCE_BINS).fill(0)];
  const k = probs.cols;
  const decay = Math.exp(-Math.max(0, time - state.ct) / config.lengthMs);
  const histogram = state.h.length === k ? state.h.map((v) => v * decay) : new Array<number>(k).fill(0);
  for (let r = 0; r < probs.rows; r++) {
    let best = 0;
    let confidence = -Infinity;
    for (let j = 0; j < k; j++) {
      const v = probs.data[r * k + j];
      if (v > confidence) {
        confidence = v;
        best = j;
      }
    }
    // A non-finite row counts as low confidence: never let it look like an honest, confident query.
    if (!Number.isFinite(confidence)) confidence = 0;
    current[1]++;
    if (confidence < ood.confidenceThreshold) current[2]++;
    current[3 + Math.min(CONFIDENCE_BINS - 1, Math.max(0, Math.floor(confidence * CONFIDENCE_BINS)))]++;
    histogram[best]++;
  }
  buckets.push(current);
  return { b: buckets, h: histogram.map((v) => Math.round(v * 1e4) / 1e4), ct: time };
}

export interface WindowTotals {
  readonly queries: number;
  readonly lowConfidence: number;
  readonly confidence: readonly number[];
}

export function windowTotals(config: WindowConfig, state: WindowState, time: number): WindowTotals {
  let queries = 0;
  let lowConfidence = 0;
  const confidence = new Array<number>(CONFIDENCE_BINS).fill(0);
  for (const bucket of live(config, state, time)) {
    queries += bucket[1];
    lowConfidence += bucket[2];
    for (let i = 0; i < CONFIDENCE_BINS; i++) confidence[i] += bucket[3 + i];
  }
  return { queries, lowConfidence, confidence };
}

/** Normalised entropy (0: one class, 1: uniform) and the top class's share of the decayed class histogram. */
export function classSpread(state: WindowState): { classEntropy: number; topClassShare: number } {
  const total = state.h.reduce((a, b) => a + b, 0);
  if (!(total > 0) || state.h.length < 2) return { classEntropy: 0, topClassShare: 0 };
  let entropy = 0;
  let top = 0;
  for (const v of state.h) {
    if (v > 0) entropy -= (v / total) * Math.log(v / total);
    top = Math.max(top, v / total);
  }
  return { classEntropy: entropy / Math.log(state.h.length), topClassShare: top };
}

/** The out-of-distribution verdict; level = rate / maxRate once minQueries are in the window. */
export function oodVerdict(config: WindowConfig, ood: OodConfig, state: WindowState, time: number): { verdict: DetectorVerdict; level: number } {
  const totals = windowTotals(config, state, time);
  const rate = totals.queries ? totals.lowConfidence / totals.queries : 0;
  let meanConfidence = 0;
  for (let i = 0; i < CONFIDENCE_BINS; i++) meanConfidence += ((i + 0.5) / CONFIDENCE_BINS) * totals.confidence[i];
  meanConfidence = totals.queries ? meanConfidence / totals.queries : 0;
  const spread = classSpread(state);
  const evaluated = totals.queries >= ood.minQueries;
  const flagged = evaluated && rate > ood.maxRate;
  return {
    verdict: {
      detector: 'ood',
      flagged,
      score: rate,
      evidence: { queries: totals.queries, lowConfidence: totals.lowConfidence, rate, meanConfidence, ...spread },
    },
    level: evaluated ? rate / ood.maxRate : 0,
  };
}

/**
 * Seconds until the window holds fewer than `maxQueries` queries again (at least 1), or 0 when it
 * already does.
 */
export function budgetRetryAfter(config: WindowConfig, state: WindowState, time: number, maxQueries: number): number {
  const buckets = live(config, state, time);
  let queries = buckets.reduce((sum, bucket) => sum + bucket[1], 0);
  if (queries < maxQueries) return 0;
  for (const bucket of buckets) {
    queries -= bucket[1];
    if (queries < maxQueries) return Math.max(1, Math.ceil((bucket[0] + config.lengthMs - time) / 1000));
  }
  return Math.max(1, Math.ceil(config.lengthMs / 1000));
}
