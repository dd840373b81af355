/**
 * Hardness of samples (HODA, Sadeghzadeh et al.). The victim's training run keeps about 11 checkpoints;
 * a query's hardness is the first checkpoint from which every later checkpoint gives the final label
 * (0: learnt from the start, m−1: only the last agrees). Benign clients' queries follow the benign
 * hardness histogram; extraction queries (synthetic or from another domain) do not. Per client, the
 * histogram of the last L hardness values is compared with the benign one by Pearson distance
 * (1 − correlation), and flagged above the largest distance seen over benign sequences of length L.
 */
import { decodeUint8, encodeUint8 } from './encoding.js';
import { z } from 'zod';
import { integerAtLeast, joinPath, optionStyle, parseOptions, positiveInteger } from '../validation/index.js';
import { DetectionConfigError, DetectionInputError } from './errors.js';
import type { DetectorVerdict } from './types.js';

/** Hardness from the labels each checkpoint gives one input, in training order (the last is the final model). */
export function hardnessFromLabels(labels: ArrayLike<number>): number {
  const m = labels.length;
  if (m === 0) throw new RangeError('hardness needs the label of at least one checkpoint');
  const final = labels[m - 1];
  let first = m - 1;
  while (first > 0 && labels[first - 1] === final) first--;
  return first;
}

/** Fractions per bin of the hardness values (values < 0 mean unknown and are skipped); zeros when none. */
export function hardnessHistogram(values: ArrayLike<number>, bins: number): Float64Array {
  const histogram = new Float64Array(bins);
  let total = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v < 0) continue;
    if (!Number.isInteger(v) || v >= bins) throw new RangeError(`hardness ${v} at ${i} is not an integer in [0, ${bins - 1}]`);
    histogram[v]++;
    total++;
  }
  if (total > 0) for (let b = 0; b < bins; b++) histogram[b] /= total;
  return histogram;
}

/**
 * Pearson distance 1 − r between two equally long vectors, in [0, 2]. A constant vector has no
 * correlation with anything: its distance is 1 (as far as from an unrelated histogram).
 */
export function pearsonDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length === 0) throw new RangeError(`Pearson distance needs two vectors of one length, got ${a.length} and ${b.length}`);
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i];
    mb += b[i];
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  if (saa === 0 || sbb === 0) return 1;
  const r = sab / Math.sqrt(saa * sbb);
  return 1 - Math.max(-1, Math.min(1, r));
}

export interface HodaThreshold {
  readonly length: number;
  readonly threshold: number;
}

export interface HodaCalibration {
  readonly benignHistogram: number[];
  /** Per length: the largest distance over the benign sequences (cut into non-overlapping chunks of that length). */
  readonly thresholds: Array<HodaThreshold & { readonly sequences: number }>;
}

export interface HodaCalibrationOptions {
  /** Hardness bins: one per checkpoint. */
  readonly bins: number;
  /** The chunk lengths to calibrate a threshold for, e.g. [100, 1000]. */
  readonly lengths: readonly number[];
  /** The benign histogram (one value per bin); default: that of all the benign values. */
  readonly benignHistogram?: ArrayLike<number>;
}

const isHistogram = (value: unknown): value is ArrayLike<number> =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as ArrayLike<unknown>).length === 'number' &&
  Array.from(value as ArrayLike<unknown>).every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0);

const calibrationSchema = z
  .strictObject(
    {
      bins: integerAtLeast(2, 'an integer from 2 to 255 (one bin per checkpoint), e.g. 11', 255),
      lengths: z.array(positiveInteger('a positive integer (a chunk length)'), { error: 'a list of chunk lengths, e.g. [100, 1000]' }),
      benignHistogram: z.custom<ArrayLike<number>>(isHistogram, { error: 'a list of non-negative numbers, one per bin' }).optional(),
    } satisfies Record<keyof HodaCalibrationOptions, z.ZodType>,
    { error: 'an object, e.g. { bins: 11, lengths: [100, 1000] }' },
  )
  .superRefine((options, context) => {
    if (options.benignHistogram && options.benignHistogram.length !== options.bins)
      context.addIssue({ code: 'custom', path: ['benignHistogram'], message: `a list of ${options.bins} non-negative numbers, one per bin` });
  });

const calibrationStyle = optionStyle(DetectionConfigError, '', {
  name: (path) => (path.length ? `calibrateHoda option ${joinPath('', path)}` : 'calibrateHoda options'),
  unknownKeys: (_name, keys, allowed) => `unknown calibrateHoda option ${keys[0]}; write one of: ${allowed.join(', ')}`,
});

/**
 * Thresholds from benign hardness sequences (e.g. the victim's held-out data, as a stream of clients).
 * The benign histogram is that of all their values unless given.
 */
export function calibrateHoda(benignSequences: readonly ArrayLike<number>[], options: HodaCalibrationOptions): HodaCalibration {
  parseOptions(calibrationSchema, options, calibrationStyle);
  const { bins, lengths } = options;
  let benign: Float64Array;
  if (options.benignHistogram) {
    benign = Float64Array.from(options.benignHistogram);
  } else {
    const all: number[] = [];
    for (const sequence of benignSequences) for (let i = 0; i < sequence.length; i++) all.push(sequence[i]);
    benign = hardnessHistogram(all, bins);
  }
  const thresholds = lengths.map((length) => {
    let threshold = 0;
    let sequences = 0;
    for (const sequence of benignSequences) {
      const known = Array.from(sequence as ArrayLike<number>).filter((v) => v >= 0);
      for (let start = 0; start + length <= known.length; start += length) {
        threshold = Math.max(threshold, pearsonDistance(hardnessHistogram(known.slice(start, start + length), bins), benign));
        sequences++;
      }
    }
    if (sequences === 0) throw new RangeError(`no benign sequence has ${length} known hardness values`);
    return { length, threshold, sequences };
  });
  return { benignHistogram: Array.from(benign), thresholds };
}

export interface HodaConfig {
  readonly enabled: boolean;
  readonly bins: number;
  readonly benignHistogram: readonly number[];
  /** Sorted by length, increasing. */
  readonly thresholds: readonly HodaThreshold[];
}

export interface HodaState {
  /**
   * Ring of the last hardness values (base64 Uint8), capacity = the largest calibrated length. Only
   * the `len` values seen are stored until it is full (a new client's ring is empty).
   */
  readonly r: string;
  readonly len: number;
  readonly head: number;
  /** Known hardness values seen. */
  readonly n: number;
  /** The last evaluation: Pearson distance, its length and threshold (distance -1 before the first). */
  readonly dist: number;
  readonly at: number;
  readonly th: number;
}

const capacityOf = (config: HodaConfig): number => (config.thresholds.length ? config.thresholds[config.thresholds.length - 1].length : 0);

export function initialHodaState(_config: HodaConfig): HodaState {
  return { r: '', len: 0, head: 0, n: 0, dist: -1, at: 0, th: 0 };
}

/**
 * Adds the known hardness values. Evaluation happens on the same non-overlapping chunks as the
 * calibration: whenever the client's count reaches a multiple of a calibrated length L, the last L
 * values are compared (the longest such L wins); testing every sliding window instead would multiply
 * the false positives the benign maximum was calibrated for.
 */
export function updateHoda(config: HodaConfig, state: HodaState, hardness: ArrayLike<number>): HodaState {
  const capacity = capacityOf(config);
  const ring = new Uint8Array(capacity);
  ring.set(decodeUint8(state.r).subarray(0, capacity));
  let { len, head, n, dist, at, th } = state;
  for (let i = 0; i < hardness.length; i++) {
    const v = hardness[i];
    if (v < 0 || capacity === 0) continue;
    if (!Number.isInteger(v) || v >= config.bins)
      throw new DetectionInputError(`hardness ${v} of row ${i} is not an integer in [0, ${config.bins - 1}] (or -1 for unknown)`);
    ring[head] = v;
    head = (head + 1) % capacity;
    if (len < capacity) len++;
    n++;
    let due: HodaThreshold | undefined;
    for (const t of config.thresholds) if (n % t.length === 0) due = t;
    if (due) {
      const last = new Uint8Array(due.length);
      for (let j = 0; j < due.length; j++) last[j] = ring[(head - due.length + j + capacity) % capacity];
      dist = pearsonDistance(hardnessHistogram(last, config.bins), config.benignHistogram);
      at = due.length;
      th = due.threshold;
    }
  }
  // Until the ring is full, head === len: the values seen are the first len.
  return { r: encodeUint8(ring.subarray(0, Math.min(len, capacity))), len, head, n, dist, at, th };
}

/** The last evaluation's verdict; level = distance / threshold (flagged above 1). */
export function hodaVerdict(state: HodaState): { verdict: DetectorVerdict; level: number } {
  if (state.dist < 0) return { verdict: { detector: 'hoda', flagged: false, score: 0, evidence: { queries: state.n } }, level: 0 };
  const flagged = state.dist > state.th;
  return {
    verdict: { detector: 'hoda', flagged, score: state.dist, evidence: { queries: state.n, length: state.at, distance: state.dist, threshold: state.th } },
    level: state.th > 0 ? state.dist / state.th : flagged ? Infinity : 0,
  };
}
