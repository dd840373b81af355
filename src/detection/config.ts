/**
 * Options of `createClientDetection`, their defaults, and their validation (once, at construction;
 * each error names the option and says what to write).
 */
import { z } from 'zod';
import { joinPath, numberIn, numberText, oneOf, optionStyle, parseOptions, shown, trueOrFalse, type NumberBounds } from '../validation/index.js';
import { DetectionConfigError } from './errors.js';
import type { HodaConfig, HodaThreshold } from './hoda.js';
import type { PolicyConfig, PolicyStep } from './policy.js';
import type { PradaConfig } from './prada.js';
import { SHAPIRO_WILK_MAX_N } from './math/shapiro-wilk.js';
import type { OodConfig, WindowConfig } from './windows.js';

export interface DetectionOptions {
  /** Sliding window of the counts (OOD rate, budget). Default 1 h in 5-minute buckets. */
  window?: { lengthMs?: number; bucketMs?: number };
  /** Out-of-distribution rate. Default on: confidence < 0.7 is low; flag above 50% once 50 queries are in the window. */
  ood?: { enabled?: boolean; confidenceThreshold?: number; maxRate?: number; minQueries?: number };
  /** PRADA. Default on (needs the inputs in the observations), δ = 0.95, 32-dim kept copies. */
  prada?: {
    enabled?: boolean;
    delta?: number;
    dims?: number;
    seed?: number;
    maxKeptPerClass?: number;
    maxKeptPoints?: number;
    maxDistances?: number;
    minDistancesPerClass?: number;
    minPooled?: number;
    testEvery?: number;
  };
  /**
   * HODA: off unless the benign histogram and thresholds (from `calibrateHoda`) are given; `{ enabled: false }`
   * keeps it off (with or without a calibration).
   */
  hoda?: { enabled?: boolean; benignHistogram: readonly number[]; thresholds: readonly HodaThreshold[] } | { enabled: false };
  /**
   * Queries matching another identity's fingerprint (the serving layer's shared fingerprint store,
   * `observation.matches`). Default on, silent without matches: flag once at least 5 of the client's
   * queries matched and more than 20% of them did (counts decayed over the window length).
   */
  fingerprint?: { enabled?: boolean; minMatches?: number; maxShare?: number };
  /** Query budget per client and window; `false` for none. Default 10 000 queries, then throttle. */
  budget?: false | { maxQueries?: number; action?: 'throttle' | 'refuse' };
  policy?: {
    /** Ladder above the default: tier names, "throttle:SECONDS", "refuse". Default ["mad-argmax", "argmax"]. */
    steps?: readonly string[];
    release?: number;
    stepQueries?: number;
    calmQueries?: number;
    calmMs?: number;
  };
}

export interface DetectionConfig {
  readonly window: WindowConfig;
  readonly ood: OodConfig;
  readonly prada: PradaConfig;
  readonly hoda: HodaConfig;
  readonly fingerprint: { readonly enabled: boolean; readonly minMatches: number; readonly maxShare: number };
  readonly budget: { readonly maxQueries: number; readonly action: 'throttle' | 'refuse' } | undefined;
  readonly policy: PolicyConfig;
}

export const DEFAULT_OPTIONS = {
  window: { lengthMs: 3_600_000, bucketMs: 300_000 },
  ood: { enabled: true, confidenceThreshold: 0.7, maxRate: 0.5, minQueries: 50 },
  prada: {
    enabled: true,
    delta: 0.95,
    dims: 32,
    seed: 0x5eed,
    maxKeptPerClass: 32,
    maxKeptPoints: 320,
    maxDistances: 1000,
    minDistancesPerClass: 10,
    minPooled: 100,
    testEvery: 10,
  },
  fingerprint: { enabled: true, minMatches: 5, maxShare: 0.2 },
  budget: { maxQueries: 10_000, action: 'throttle' as const },
  policy: { steps: ['mad-argmax', 'argmax'], release: 0.8, stepQueries: 200, calmQueries: 500, calmMs: 3_600_000 },
} as const;

/** A number option, its error saying what to write with an example: "a number > 0 and < 1, e.g. delta: 0.95". */
const num = (key: string, example: string, bounds: NumberBounds) => numberIn(bounds, `${numberText(bounds)}, e.g. ${key}: ${example}`).optional();
const bool = trueOrFalse().optional();

/** An object of options; its error lists the keys it takes. */
const options = <S extends z.ZodRawShape>(shape: S) => z.strictObject(shape, { error: `an object with some of: ${Object.keys(shape).join(', ')}` });

const HODA_HINT = 'pass the output of calibrateHoda(benignSequences, { bins: 11, lengths: [100, 1000] })';

/** The shape of DetectionOptions; bounds that depend on another option (bucketMs ≤ lengthMs, ...) are checked after it. */
const detectionSchema = options({
  window: options({
    lengthMs: num('lengthMs', '3600000', { integer: true, min: 1000 }),
    bucketMs: num('bucketMs', '300000', { integer: true, min: 1 }),
  }).optional(),
  ood: options({
    enabled: bool,
    confidenceThreshold: num('confidenceThreshold', '0.7', { min: 0, max: 1, minExclusive: true }),
    maxRate: num('maxRate', '0.5', { min: 0, max: 1, maxExclusive: true }),
    minQueries: num('minQueries', '50', { integer: true, min: 1 }),
  }).optional(),
  prada: options({
    enabled: bool,
    delta: num('delta', '0.95 (published 0.9 to 0.99)', { min: 0, max: 1, minExclusive: true, maxExclusive: true }),
    dims: num('dims', '32', { integer: true, min: 2, max: 4096 }),
    seed: num('seed', '24301', { integer: true, min: 0, max: 2 ** 32 - 1 }),
    maxKeptPerClass: num('maxKeptPerClass', '32', { integer: true, min: 1 }),
    maxKeptPoints: num('maxKeptPoints', '320', { integer: true, min: 1 }),
    maxDistances: num('maxDistances', '1000', { integer: true, min: 20, max: SHAPIRO_WILK_MAX_N }),
    minDistancesPerClass: num('minDistancesPerClass', '10', { integer: true, min: 1 }),
    minPooled: num('minPooled', '100', { integer: true, min: 3 }),
    testEvery: num('testEvery', '10', { integer: true, min: 1 }),
  } satisfies Record<keyof typeof DEFAULT_OPTIONS.prada, z.ZodType>).optional(),
  hoda: options({
    enabled: bool,
    benignHistogram: z
      .array(z.number().min(0), { error: `an array of ≥ 2 non-negative numbers, one per hardness bin; ${HODA_HINT}` })
      .min(2, { error: `an array of ≥ 2 non-negative numbers, one per hardness bin; ${HODA_HINT}` })
      .optional(),
    thresholds: z
      .array(
        options({
          length: numberIn({ integer: true, min: 1, max: 100_000 }, 'an integer ≥ 1 and ≤ 100000, e.g. length: 100'),
          threshold: numberIn({ min: 0, max: 2 }, 'a number ≥ 0 and ≤ 2, e.g. threshold: 0.3'),
          // calibrateHoda's output carries it; it is not read.
          sequences: z.unknown().optional(),
        }),
        { error: `a non-empty array of { length, threshold }; ${HODA_HINT}` },
      )
      .min(1, { error: `a non-empty array of { length, threshold }; ${HODA_HINT}` })
      .optional(),
  }).optional(),
  fingerprint: options({
    enabled: bool,
    minMatches: num('minMatches', '5', { integer: true, min: 1 }),
    maxShare: num('maxShare', '0.2', { min: 0, max: 1, maxExclusive: true }),
  }).optional(),
  budget: z
    .union(
      [
        z.literal(false),
        options({
          maxQueries: num('maxQueries', '10000 (or budget: false for none)', { integer: true, min: 1 }),
          action: oneOf(['throttle', 'refuse'], '"throttle" or "refuse"').optional(),
        }),
      ],
      {
        error: 'false (no budget) or an object with some of: maxQueries, action',
      },
    )
    .optional(),
  policy: options({
    steps: z.array(z.unknown(), { error: 'an array such as ["mad-argmax", "argmax", "throttle:60", "refuse"]' }).optional(),
    release: num('release', '0.8', { min: 0, max: 1, minExclusive: true, maxExclusive: true }),
    stepQueries: num('stepQueries', '200', { integer: true, min: 1 }),
    calmQueries: num('calmQueries', '500', { integer: true, min: 1 }),
    calmMs: num('calmMs', '3600000', { integer: true, min: 0 }),
  }).optional(),
} satisfies Record<keyof DetectionOptions, z.ZodType>);

const style = optionStyle(DetectionConfigError, '', {
  name: (path) => (path.length ? `detection option ${joinPath('', path)}` : 'detection options'),
  unknownKeys: (_name, keys, allowed, path) => `unknown detection option ${joinPath('', [...path, keys[0]])}; write one of: ${allowed.join(', ')}`,
});

/** A bound that depends on another option, refused in the same words as the schema's. */
function refuse(path: string, what: string, value: unknown): never {
  throw new DetectionConfigError(`detection option ${path} must be ${what}, got ${shown(value)}`);
}

/** A throttle's longest pace: a day (a paced client still gets one row a day; "refuse" gets none). */
export const MAX_THROTTLE_SECONDS = 86_400;

export function parseStep(text: unknown, index: number): PolicyStep {
  const path = `policy.steps[${index}]`;
  if (typeof text !== 'string' || text.trim() === '') {
    throw new DetectionConfigError(`detection option ${path} must be a tier name (e.g. "argmax"), "throttle:SECONDS" or "refuse"; got ${JSON.stringify(text)}`);
  }
  const step = text.trim();
  if (step === 'refuse') return { action: 'refuse' };
  if (step.startsWith('throttle')) {
    const match = /^throttle:(\d+)$/.exec(step);
    if (!match || Number(match[1]) < 1 || Number(match[1]) > MAX_THROTTLE_SECONDS)
      throw new DetectionConfigError(
        `detection option ${path} "${step}": write "throttle:SECONDS" with whole seconds from 1 to ${MAX_THROTTLE_SECONDS} (a day; "refuse" for longer), e.g. "throttle:60"`,
      );
    return { action: 'throttle', retryAfterSeconds: Number(match[1]) };
  }
  return { action: 'escalate', tier: step };
}

export function resolveOptions(given: DetectionOptions = {}): DetectionConfig {
  const top = parseOptions(detectionSchema, given, style);
  const D = DEFAULT_OPTIONS;

  const lengthMs = top.window?.lengthMs ?? D.window.lengthMs;
  const bucketMs = top.window?.bucketMs ?? Math.min(D.window.bucketMs, lengthMs);
  if (bucketMs > lengthMs)
    refuse('window.bucketMs', `an integer ≥ 1 and ≤ ${lengthMs} (window.lengthMs), e.g. bucketMs: ${Math.min(D.window.bucketMs, lengthMs)}`, bucketMs);
  if (lengthMs / bucketMs > 1000)
    throw new DetectionConfigError(
      `detection option window.bucketMs ${bucketMs} makes ${Math.ceil(lengthMs / bucketMs)} buckets; use at most 1000 (bucketMs ≥ ${Math.ceil(lengthMs / 1000)})`,
    );

  const ood: OodConfig = { ...D.ood, ...defined(top.ood) };
  const pradaGiven = defined(top.prada);
  const maxDistances = pradaGiven.maxDistances ?? D.prada.maxDistances;
  const minPooled = pradaGiven.minPooled ?? Math.min(D.prada.minPooled, maxDistances - 1);
  if (minPooled > maxDistances - 1)
    refuse('prada.minPooled', `an integer ≥ 3 and ≤ ${maxDistances - 1} (below prada.maxDistances), e.g. minPooled: 100`, minPooled);
  const prada: PradaConfig = { ...D.prada, ...pradaGiven, minPooled };

  let hoda: HodaConfig = { enabled: false, bins: 0, benignHistogram: [], thresholds: [] };
  if (top.hoda !== undefined) {
    const { benignHistogram: histogram, thresholds } = top.hoda;
    // Both or neither; neither only to turn HODA off.
    for (const [name, value, other] of [
      ['benignHistogram', histogram, thresholds],
      ['thresholds', thresholds, histogram],
    ] as const) {
      if (value === undefined && (other !== undefined || top.hoda.enabled !== false))
        refuse(`hoda.${name}`, `given with the other half of the calibration (${HODA_HINT}), or leave both out with hoda: { enabled: false }`, value);
    }
  }
  if (top.hoda?.benignHistogram !== undefined && top.hoda.thresholds !== undefined) {
    const histogram = top.hoda.benignHistogram;
    if (histogram.every((v) => v === histogram[0])) {
      throw new DetectionConfigError(
        `detection option hoda.benignHistogram is flat: its Pearson distance to anything is undefined; ${HODA_HINT} on real benign queries`,
      );
    }
    if (histogram.length > 255)
      throw new DetectionConfigError('detection option hoda.benignHistogram has more than 255 bins; use one bin per checkpoint (about 11)');
    const parsed = top.hoda.thresholds.map(({ length, threshold }) => ({ length, threshold }));
    parsed.sort((a, b) => a.length - b.length);
    for (let i = 1; i < parsed.length; i++) {
      if (parsed[i].length === parsed[i - 1].length)
        throw new DetectionConfigError(`detection option hoda.thresholds has length ${parsed[i].length} twice; give one threshold per length`);
    }
    hoda = { enabled: top.hoda.enabled ?? true, bins: histogram.length, benignHistogram: [...histogram], thresholds: parsed };
  }

  const fingerprint = { ...D.fingerprint, ...defined(top.fingerprint) };
  const budget: DetectionConfig['budget'] = top.budget === false ? undefined : { ...D.budget, ...defined(top.budget) };

  const steps = (top.policy?.steps ?? D.policy.steps).map(parseStep);
  const policy: PolicyConfig = { ...D.policy, ...defined(top.policy), steps };

  return { window: { lengthMs, bucketMs }, ood, prada, hoda, fingerprint, budget, policy };
}

/** The options that were given (an undefined one keeps its default). */
function defined<T extends object>(options: T | undefined): Partial<T> {
  return Object.fromEntries(Object.entries(options ?? {}).filter(([, value]) => value !== undefined)) as Partial<T>;
}
