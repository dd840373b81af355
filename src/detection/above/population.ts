/**
 * Detection above the client: detectors over the recent traffic of a whole population (every
 * identity, or only the *young* ones, with fewer than `youngQueries` queries so far), for the thief
 * who splits its queries over many identities so that each stays under every per-client detector.
 * Production systems answer that thief at the population level: Blacklight keeps one fingerprint
 * store across all accounts, SEAT flags accounts by query similarity.
 *
 * Pure, like the per-client detectors: the serving layer keeps the counts (in memory, or summed across
 * replicas in Redis) and passes the time in. The counts are additive, so replicas merge by adding:
 * per time bucket, a flat vector
 *
 *   [queries, low-confidence queries, queries matching another identity's fingerprint,
 *    confidence histogram (10 bins), victim's class histogram (K), hardness histogram (HODA's bins)]
 *
 * and the detectors read the sum over the window:
 * - `ood`: the share of queries on which the victim is unsure (max probability under a threshold),
 *   flagged above `maxRate` (set it from the benign rate: `calibratePopulation`);
 * - `hoda`: the total-variation distance of the window's hardness histogram (HODA's checkpoints) to
 *   the benign one, flagged above `maxDistance` (`calibratePopulation` with hardness). Not HODA's
 *   per-client Pearson distance: a thief's queries mixed into benign traffic add a flatter histogram
 *   to the benign one, which keeps the Pearson correlation near 1 while the total variation grows;
 * - `classes`: the total-variation distance of the victim's class histogram to the benign one
 *   (uniform unless given), flagged above `maxDistance`;
 * - `matches`: the share of queries whose fingerprint matches another identity's, above `maxRate`.
 *
 * The alarm has hysteresis: on at the first flag; off only after every detector's level (score over
 * its threshold) has stayed below `release` for `calmMs`; between release and the threshold nothing
 * moves, so evidence hovering around a threshold does not flap.
 */
import { z } from 'zod';
import { joinPath, numberIn, numberText, optionStyle, parseOptions, shown, trueOrFalse, type NumberBounds } from '../../validation/index.js';
import { DetectionConfigError } from '../errors.js';
import type { DetectorVerdict } from '../types.js';
import { CONFIDENCE_BINS } from '../windows.js';

/** Offsets in a counts vector. */
export const Q = 0;
export const LOW = 1;
export const MATCHED = 2;
export const CONF = 3;
/** Where the class histogram starts; the hardness histogram follows it. */
export const CLASSES_AT = CONF + CONFIDENCE_BINS;

/** The shape of a counts vector: K classes and HODA's bins (0 without HODA). */
export interface PopulationLayout {
  readonly classes: number;
  readonly bins: number;
}

export const countsLength = (layout: PopulationLayout): number => CLASSES_AT + layout.classes + layout.bins;

export interface PopulationConfig {
  readonly window: { readonly lengthMs: number; readonly bucketMs: number };
  /** No detector judges a view before it holds this many queries in the window. */
  readonly minQueries: number;
  /** An identity is young while it has fewer queries than this (its own history, all time). */
  readonly youngQueries: number;
  readonly ood: { readonly enabled: boolean; readonly confidenceThreshold: number; readonly maxRate: number };
  readonly hoda: { readonly enabled: boolean; readonly bins: number; readonly reference: readonly number[]; readonly maxDistance: number };
  readonly classes: { readonly enabled: boolean; readonly maxDistance: number; readonly reference: readonly number[] | undefined };
  readonly matches: { readonly enabled: boolean; readonly maxRate: number };
  readonly alarm: { readonly release: number; readonly calmMs: number };
  /** During an alarm, an identity past its youth is a suspect (not clean) when its own unsure share is above this. */
  readonly suspectRate: number;
}

export interface PopulationOptions {
  /** The window over which each view is judged. Default 10 minutes in 1-minute buckets. */
  window?: { lengthMs?: number; bucketMs?: number };
  /** Default 200. */
  minQueries?: number;
  /** Default 100. */
  youngQueries?: number;
  /** Default on: confidence < 0.7 is unsure; flag above 15% (set it a few points above your benign rate). */
  ood?: { enabled?: boolean; confidenceThreshold?: number; maxRate?: number };
  /**
   * HODA over the population: the benign hardness histogram (one number per checkpoint) and the
   * largest total-variation distance to it; `calibratePopulation` with hardness gives both. Off without it,
   * and with `{ enabled: false }` alone (which also keeps a server from calibrating it on its own).
   */
  hoda?: { enabled?: true; reference: readonly number[]; maxDistance: number } | { enabled: false; reference?: readonly number[]; maxDistance?: number };
  /** Default on: flag when the class histogram is more than 0.25 (total variation) from the reference (uniform unless given). */
  classes?: { enabled?: boolean; maxDistance?: number; reference?: readonly number[] };
  /** Default on (silent without fingerprints): flag when more than 5% of the queries match another identity's. */
  matches?: { enabled?: boolean; maxRate?: number };
  /** Default release 0.8, calm for 10 minutes. */
  alarm?: { release?: number; calmMs?: number };
  /** Default: ood.maxRate. */
  suspectRate?: number;
}

export const POPULATION_DEFAULTS = {
  window: { lengthMs: 600_000, bucketMs: 60_000 },
  minQueries: 200,
  youngQueries: 100,
  ood: { enabled: true, confidenceThreshold: 0.7, maxRate: 0.15 },
  classes: { enabled: true, maxDistance: 0.25 },
  matches: { enabled: true, maxRate: 0.05 },
  alarm: { release: 0.8, calmMs: 600_000 },
} as const;

/** A number option, its error saying what to write with an example: "a number ≥ 0 and < 1, e.g. maxRate: 0.15". */
const num = (key: string, example: string, bounds: NumberBounds) => numberIn(bounds, `${numberText(bounds)}, e.g. ${key}: ${example}`);
const bool = trueOrFalse().optional();

/** An object of options; its error lists the keys it takes. */
const options = <S extends z.ZodRawShape>(shape: S) => z.strictObject(shape, { error: `an object with some of: ${Object.keys(shape).join(', ')}` });

const isHistogram = (value: unknown): boolean =>
  Array.isArray(value) &&
  value.length >= 2 &&
  value.every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0) &&
  value.reduce((a: number, b: number) => a + b, 0) > 0;

/** A histogram option: ≥ 2 non-negative numbers, not all zero (normalised once parsed). */
const histogram = (what: string) => z.custom<readonly number[]>(isHistogram, { error: `${what}, e.g. reference: [0.1, 0.1, ...]` });

const share = { min: 0, max: 1, minExclusive: true, maxExclusive: true };

const HODA_OFF = 'or hoda: { enabled: false }';
const hodaReference = histogram(`the benign hardness histogram, one number per checkpoint (calibratePopulation’s, with hardness; ${HODA_OFF})`);
const hodaMaxDistance = num('maxDistance', `0.1 (calibratePopulation’s; ${HODA_OFF})`, share);
/** population.hoda while on: reference and maxDistance required. */
const hodaOnSchema = options({ hoda: options({ enabled: bool, reference: hodaReference, maxDistance: hodaMaxDistance }) });

/** The shape of PopulationOptions; bounds that depend on another option (bucketMs ≤ lengthMs) are checked after it. */
const populationSchema = options({
  window: options({
    lengthMs: num('lengthMs', '600000', { integer: true, min: 1000 }).optional(),
    bucketMs: num('bucketMs', '60000', { integer: true, min: 100 }).optional(),
  }).optional(),
  minQueries: num('minQueries', '200', { integer: true, min: 1 }).optional(),
  youngQueries: num('youngQueries', '100', { integer: true, min: 1 }).optional(),
  ood: options({
    enabled: bool,
    confidenceThreshold: num('confidenceThreshold', '0.7', { min: 0, max: 1, minExclusive: true }).optional(),
    maxRate: num('maxRate', '0.15 (a few points above the benign rate)', { min: 0, max: 1, maxExclusive: true }).optional(),
  }).optional(),
  // Both needed only while HODA is on (checked once parsed): { enabled: false } alone turns it off.
  hoda: options({ enabled: bool, reference: hodaReference.optional(), maxDistance: hodaMaxDistance.optional() }).optional(),
  classes: options({
    enabled: bool,
    maxDistance: num('maxDistance', '0.25', share).optional(),
    reference: histogram('the benign class histogram, one non-negative number per class').optional(),
  }).optional(),
  matches: options({ enabled: bool, maxRate: num('maxRate', '0.05', share).optional() }).optional(),
  alarm: options({ release: num('release', '0.8', share).optional(), calmMs: num('calmMs', '600000', { integer: true, min: 0 }).optional() }).optional(),
  suspectRate: num('suspectRate', '0.15', { min: 0, max: 1, maxExclusive: true }).optional(),
} satisfies Record<keyof PopulationOptions, z.ZodType>);

const style = optionStyle(DetectionConfigError, '', {
  name: (path) => (path.length ? `population option ${joinPath('', path)}` : 'population options'),
  unknownKeys: (_name, keys, allowed, path) => `unknown population option ${joinPath('', [...path, keys[0]])}; write one of: ${allowed.join(', ')}`,
});

const normalised = (values: readonly number[]): number[] => {
  const sum = values.reduce((a, b) => a + b, 0);
  return values.map((v) => v / sum);
};

/** Validated options with defaults; each mistake says what to write. */
export function resolvePopulationOptions(given: PopulationOptions = {}): PopulationConfig {
  const top = parseOptions(populationSchema, given, style);
  const D = POPULATION_DEFAULTS;
  const lengthMs = top.window?.lengthMs ?? D.window.lengthMs;
  const bucketMs = top.window?.bucketMs ?? Math.min(D.window.bucketMs, lengthMs);
  if (bucketMs > lengthMs)
    throw new DetectionConfigError(
      `population option window.bucketMs must be an integer ≥ 100 and ≤ ${lengthMs} (window.lengthMs), e.g. bucketMs: 60000, got ${shown(bucketMs)}`,
    );
  if (lengthMs / bucketMs > 100)
    throw new DetectionConfigError(
      `population option window.bucketMs ${bucketMs} makes ${Math.ceil(lengthMs / bucketMs)} buckets; use at most 100 (bucketMs ≥ ${Math.ceil(lengthMs / 100)})`,
    );
  const ood = {
    enabled: top.ood?.enabled ?? D.ood.enabled,
    confidenceThreshold: top.ood?.confidenceThreshold ?? D.ood.confidenceThreshold,
    maxRate: top.ood?.maxRate ?? D.ood.maxRate,
  };
  let hoda: PopulationConfig['hoda'] = { enabled: false, bins: 0, reference: [], maxDistance: 1 };
  if (top.hoda !== undefined && top.hoda.enabled !== false) {
    // Parsed again as on, so that a missing part is refused in the same words as a wrong one.
    const on = parseOptions(hodaOnSchema, { hoda: top.hoda }, style).hoda;
    const reference = normalised(on.reference);
    hoda = { enabled: true, bins: reference.length, reference, maxDistance: on.maxDistance };
  }
  return {
    window: { lengthMs, bucketMs },
    minQueries: top.minQueries ?? D.minQueries,
    youngQueries: top.youngQueries ?? D.youngQueries,
    ood,
    hoda,
    classes: {
      enabled: top.classes?.enabled ?? D.classes.enabled,
      maxDistance: top.classes?.maxDistance ?? D.classes.maxDistance,
      reference: top.classes?.reference === undefined ? undefined : normalised(top.classes.reference),
    },
    matches: { enabled: top.matches?.enabled ?? D.matches.enabled, maxRate: top.matches?.maxRate ?? D.matches.maxRate },
    alarm: { release: top.alarm?.release ?? D.alarm.release, calmMs: top.alarm?.calmMs ?? D.alarm.calmMs },
    suspectRate: top.suspectRate ?? ood.maxRate,
  };
}

/**
 * One request's contribution to the counts: the victim's original probabilities, HODA's hardness per
 * row (-1 unknown) and, per row, whether its fingerprint matched another identity's.
 */
export function summarise(
  layout: PopulationLayout,
  confidenceThreshold: number,
  probs: { readonly rows: number; readonly cols: number; readonly data: Float32Array },
  hardness?: ArrayLike<number>,
  matches?: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(countsLength(layout));
  const k = probs.cols;
  const hardAt = CLASSES_AT + layout.classes;
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
    if (!Number.isFinite(confidence)) confidence = 0;
    out[Q]++;
    if (confidence < confidenceThreshold) out[LOW]++;
    out[CONF + Math.min(CONFIDENCE_BINS - 1, Math.max(0, Math.floor(confidence * CONFIDENCE_BINS)))]++;
    if (best < layout.classes) out[CLASSES_AT + best]++;
    const h = hardness ? hardness[r] : -1;
    if (h >= 0 && h < layout.bins) out[hardAt + h]++;
    if (matches && matches[r] > 0) out[MATCHED]++;
  }
  return out;
}

/** Total-variation distance between a count histogram and a reference distribution (uniform when undefined). */
export function totalVariation(counts: ArrayLike<number>, reference: readonly number[] | undefined): number {
  return variationAt(counts, 0, counts.length, reference);
}

/** totalVariation of counts[from .. from + length) (no copy). */
function variationAt(counts: ArrayLike<number>, from: number, length: number, reference: readonly number[] | undefined): number {
  let total = 0;
  for (let i = 0; i < length; i++) total += counts[from + i];
  if (!(total > 0)) return 0;
  let distance = 0;
  for (let i = 0; i < length; i++) distance += Math.abs(counts[from + i] / total - (reference ? (reference[i] ?? 0) : 1 / length));
  return distance / 2;
}

/** The detectors' scores, with whether each is judged (enough queries in the window); NaN: the detector is off. */
interface Scores {
  queries: number;
  ood: number;
  hodaKnown: number;
  hoda: number;
  classes: number;
  matches: number;
}

function scoresOf(config: PopulationConfig, layout: PopulationLayout, totals: ArrayLike<number>, out: Scores): Scores {
  const queries = totals[Q] ?? 0;
  out.queries = queries;
  out.ood = config.ood.enabled ? (queries ? totals[LOW] / queries : 0) : Number.NaN;
  out.hoda = Number.NaN;
  out.hodaKnown = 0;
  if (config.hoda.enabled && layout.bins === config.hoda.bins && layout.bins > 0) {
    const at = CLASSES_AT + layout.classes;
    for (let b = 0; b < layout.bins; b++) out.hodaKnown += totals[at + b];
    out.hoda = variationAt(totals, at, layout.bins, config.hoda.reference);
  }
  out.classes = Number.NaN;
  // A reference (and the threshold calibrated with it) is one model's: answers with another number of classes are not judged against it.
  const reference = config.classes.reference;
  if (config.classes.enabled && layout.classes >= 2 && (!reference || reference.length === layout.classes)) {
    out.classes = variationAt(totals, CLASSES_AT, layout.classes, reference);
  }
  out.matches = config.matches.enabled ? (queries ? totals[MATCHED] / queries : 0) : Number.NaN;
  return out;
}

const scratchScores: Scores = { queries: 0, ood: 0, hodaKnown: 0, hoda: 0, classes: 0, matches: 0 };

/**
 * Whether a detector flags and the largest level, without building verdicts (the serving layer
 * judges every request; the verdicts are built only for logs and listings).
 */
export function populationLevels(config: PopulationConfig, layout: PopulationLayout, totals: ArrayLike<number>): { anyFlagged: boolean; maxLevel: number } {
  const s = scoresOf(config, layout, totals, scratchScores);
  const evaluated = s.queries >= config.minQueries;
  let anyFlagged = false;
  let maxLevel = 0;
  const add = (score: number, threshold: number, judged: boolean): void => {
    if (Number.isNaN(score) || !judged) return;
    if (score > threshold) anyFlagged = true;
    maxLevel = Math.max(maxLevel, score / threshold);
  };
  add(s.ood, config.ood.maxRate, evaluated);
  add(s.hoda, config.hoda.maxDistance, s.hodaKnown >= config.minQueries);
  add(s.classes, config.classes.maxDistance, evaluated);
  add(s.matches, config.matches.maxRate, evaluated);
  return { anyFlagged, maxLevel };
}

/** Each population detector's verdict on the window's counts; level = score over its threshold (0 before minQueries). */
export function populationVerdicts(
  config: PopulationConfig,
  layout: PopulationLayout,
  totals: ArrayLike<number>,
): { verdicts: DetectorVerdict[]; anyFlagged: boolean; maxLevel: number } {
  const s = scoresOf(config, layout, totals, { queries: 0, ood: 0, hodaKnown: 0, hoda: 0, classes: 0, matches: 0 });
  const evaluated = s.queries >= config.minQueries;
  const { queries } = s;
  const verdicts: DetectorVerdict[] = [];
  if (!Number.isNaN(s.ood)) {
    verdicts.push({
      detector: 'ood',
      flagged: evaluated && s.ood > config.ood.maxRate,
      score: s.ood,
      evidence: { queries, unsure: totals[LOW], rate: s.ood, threshold: config.ood.maxRate },
    });
  }
  if (!Number.isNaN(s.hoda)) {
    const judged = s.hodaKnown >= config.minQueries;
    verdicts.push({
      detector: 'hoda',
      flagged: judged && s.hoda > config.hoda.maxDistance,
      score: s.hoda,
      evidence: { queries: s.hodaKnown, distance: s.hoda, threshold: config.hoda.maxDistance },
    });
  }
  if (!Number.isNaN(s.classes)) {
    verdicts.push({
      detector: 'classes',
      flagged: evaluated && s.classes > config.classes.maxDistance,
      score: s.classes,
      evidence: { queries, distance: s.classes, threshold: config.classes.maxDistance },
    });
  }
  if (!Number.isNaN(s.matches)) {
    verdicts.push({
      detector: 'matches',
      flagged: evaluated && s.matches > config.matches.maxRate,
      score: s.matches,
      evidence: { queries, matched: totals[MATCHED], rate: s.matches, threshold: config.matches.maxRate },
    });
  }
  return { verdicts, ...populationLevels(config, layout, totals) };
}

/** A view's alarm: on since `since`; `calmT` the start of the current calm run (-1: not calm). */
export interface AlarmState {
  readonly on: boolean;
  readonly since: number;
  readonly calmT: number;
}

export const initialAlarmState = (): AlarmState => ({ on: false, since: -1, calmT: -1 });

/** The alarm after a judgement at `time`; `started` / `ended` say whether it just changed (log it). */
export function stepAlarm(
  config: PopulationConfig['alarm'],
  state: AlarmState,
  time: number,
  anyFlagged: boolean,
  maxLevel: number,
): { state: AlarmState; started: boolean; ended: boolean } {
  if (anyFlagged) {
    return { state: { on: true, since: state.on ? state.since : time, calmT: -1 }, started: !state.on, ended: false };
  }
  if (!state.on) return { state, started: false, ended: false };
  if (maxLevel >= config.release) return { state: { ...state, calmT: -1 }, started: false, ended: false };
  const calmT = state.calmT < 0 ? time : state.calmT;
  if (time - calmT >= config.calmMs) return { state: initialAlarmState(), started: false, ended: true };
  return { state: { ...state, calmT }, started: false, ended: false };
}

/** mulberry32, for the calibration's seeded draws (the detection layer has no other randomness). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface PopulationCalibration {
  /** The benign unsure share (max probability under the threshold) over all the rows given. */
  readonly benignRate: number;
  /** Options to pass as `population`: ood.maxRate, classes.{reference, maxDistance} and, with hardness, hoda. */
  readonly options: {
    ood: { maxRate: number };
    classes: { reference: number[]; maxDistance: number };
    hoda?: { reference: number[]; maxDistance: number };
  };
  /** The largest unsure share, class distance and hardness distance seen over the benign draws of `windowQueries` rows. */
  readonly draws: {
    readonly count: number;
    readonly windowQueries: number;
    readonly maxRate: number;
    readonly maxDistance: number;
    readonly maxHardnessDistance?: number;
  };
}

/**
 * Thresholds from benign traffic (e.g. the victim's held-out data): `draws` seeded draws of
 * `windowQueries` rows (the smallest window a view is judged on, `minQueries`); each threshold is the
 * largest value the benign draws reached plus `margin` (`hodaMargin` for the hardness distance).
 * With `hardness` (HODA's bin per row, -1 unknown) and `bins`, HODA's population threshold too: the
 * reference is the histogram of half the rows and the draws come from the other half, so the
 * threshold covers two independent benign samples differing, not only a window's own noise.
 */
export function calibratePopulation(
  probs: { readonly rows: number; readonly cols: number; readonly data: Float32Array },
  options: {
    windowQueries?: number;
    draws?: number;
    confidenceThreshold?: number;
    margin?: number;
    hodaMargin?: number;
    seed?: number;
    hardness?: ArrayLike<number>;
    bins?: number;
  } = {},
): PopulationCalibration {
  const windowQueries = options.windowQueries ?? POPULATION_DEFAULTS.minQueries;
  const count = options.draws ?? 200;
  const margin = options.margin ?? 0.05;
  const threshold = options.confidenceThreshold ?? POPULATION_DEFAULTS.ood.confidenceThreshold;
  if (!(probs.rows >= windowQueries))
    throw new RangeError(`calibratePopulation needs at least windowQueries (${windowQueries}) benign rows, got ${probs.rows}`);
  const layout = { classes: probs.cols, bins: 0 };
  const all = summarise(layout, threshold, probs);
  const reference = Array.from(all.subarray(CLASSES_AT, CLASSES_AT + probs.cols), (v) => v / probs.rows);
  // Per row: unsure or not, and its class.
  const unsure = new Uint8Array(probs.rows);
  const label = new Uint32Array(probs.rows);
  for (let r = 0; r < probs.rows; r++) {
    const one = summarise(layout, threshold, { rows: 1, cols: probs.cols, data: probs.data.subarray(r * probs.cols, (r + 1) * probs.cols) });
    unsure[r] = one[LOW];
    for (let j = 0; j < probs.cols; j++) if (one[CLASSES_AT + j]) label[r] = j;
  }
  const random = seeded(options.seed ?? 0x5eed);
  let maxRate = 0;
  let maxDistance = 0;
  const histogram = new Float64Array(probs.cols);
  for (let d = 0; d < count; d++) {
    histogram.fill(0);
    let low = 0;
    for (let i = 0; i < windowQueries; i++) {
      const r = Math.floor(random() * probs.rows);
      low += unsure[r];
      histogram[label[r]]++;
    }
    maxRate = Math.max(maxRate, low / windowQueries);
    maxDistance = Math.max(maxDistance, totalVariation(histogram, reference));
  }
  let hoda: PopulationCalibration['options']['hoda'];
  let maxHardnessDistance: number | undefined;
  if (options.hardness && options.bins) {
    // The same generator, continued: the class draws above and the hardness draws are one seeded sequence.
    const given = options.hardness;
    // Rows past the answers given have no answer: not calibrated on.
    const hardness = given.length > probs.rows ? Array.from({ length: probs.rows }, (_, r) => given[r]) : given;
    const calibrated = hardnessCalibration(hardness, options.bins, windowQueries, count, options.hodaMargin ?? margin, random);
    hoda = { reference: calibrated.reference, maxDistance: calibrated.maxDistance };
    maxHardnessDistance = calibrated.maxHardnessDistance;
  }
  return {
    benignRate: all[LOW] / probs.rows,
    options: {
      ood: { maxRate: Math.min(0.99, maxRate + margin) },
      classes: { reference, maxDistance: Math.min(0.99, maxDistance + margin) },
      ...(hoda ? { hoda } : {}),
    },
    draws: { count, windowQueries, maxRate, maxDistance, ...(maxHardnessDistance !== undefined ? { maxHardnessDistance } : {}) },
  };
}

/** Population HODA's calibration: the benign hardness histogram and the distance threshold over windows of benign rows. */
export interface PopulationHodaCalibration {
  /** Pass as `population.hoda`. */
  readonly options: { reference: number[]; maxDistance: number };
  /** The largest distance the benign draws reached (before the margin). */
  readonly maxHardnessDistance: number;
  /** Known hardness values the calibration used. */
  readonly rows: number;
}

/**
 * calibratePopulation's hardness part alone, for a server that has HODA's checkpoints and held-out
 * benign inputs but not the model's answers on them (the proxy with --hoda-calibration): the same
 * reference and threshold, from `hardness` (HODA's bin per row, -1 unknown) over `bins` bins.
 */
export function calibratePopulationHoda(
  hardness: ArrayLike<number>,
  bins: number,
  options: { windowQueries?: number; draws?: number; margin?: number; seed?: number } = {},
): PopulationHodaCalibration {
  const calibrated = hardnessCalibration(
    hardness,
    bins,
    options.windowQueries ?? POPULATION_DEFAULTS.minQueries,
    options.draws ?? 200,
    options.margin ?? 0.05,
    seeded(options.seed ?? 0x5eed),
  );
  return {
    options: { reference: calibrated.reference, maxDistance: calibrated.maxDistance },
    maxHardnessDistance: calibrated.maxHardnessDistance,
    rows: calibrated.rows,
  };
}

/**
 * The reference is the histogram of all known rows; the threshold comes from draws of the odd rows
 * against the histogram of the even ones, so it covers two independent benign samples differing,
 * not only a window's own noise.
 */
function hardnessCalibration(
  hardness: ArrayLike<number>,
  bins: number,
  windowQueries: number,
  count: number,
  margin: number,
  random: () => number,
): { reference: number[]; maxDistance: number; maxHardnessDistance: number; rows: number } {
  const known: number[] = [];
  for (let r = 0; r < hardness.length; r++) {
    const h = hardness[r];
    if (h >= 0 && h < bins && Number.isInteger(h)) known.push(h);
  }
  if (known.length < 2 * windowQueries)
    throw new RangeError(`calibratePopulation needs at least 2 × windowQueries (${2 * windowQueries}) known hardness values, got ${known.length}`);
  // Reference from the even rows, draws from the odd ones.
  const half = new Float64Array(bins);
  const pool: number[] = [];
  known.forEach((h, i) => (i % 2 === 0 ? half[h]++ : pool.push(h)));
  const sum = half.reduce((a, b) => a + b, 0);
  for (let b = 0; b < bins; b++) half[b] /= sum;
  const halfReference = Array.from(half);
  let maxHardnessDistance = 0;
  const window = new Float64Array(bins);
  for (let d = 0; d < count; d++) {
    window.fill(0);
    for (let i = 0; i < windowQueries; i++) window[pool[Math.floor(random() * pool.length)]]++;
    for (let b = 0; b < bins; b++) window[b] /= windowQueries;
    maxHardnessDistance = Math.max(maxHardnessDistance, totalVariation(window, halfReference));
  }
  const all = new Float64Array(bins);
  for (const h of known) all[h]++;
  return {
    reference: Array.from(all, (v) => v / known.length),
    maxDistance: Math.min(0.99, maxHardnessDistance + margin),
    maxHardnessDistance,
    rows: known.length,
  };
}
