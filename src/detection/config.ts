/**
 * Options of `createClientDetection`, their defaults, and their validation (once, at construction;
 * each error names the option and says what to write).
 */
import { DetectionConfigError } from './errors.js';
import type { HodaConfig, HodaThreshold } from './hoda.js';
import type { PolicyConfig, PolicyStep } from './policy.js';
import type { PradaConfig } from './prada.js';
import { SHAPIRO_WILK_MAX_N } from './shapiro-wilk.js';
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
  /** HODA: off unless the benign histogram and thresholds (from `calibrateHoda`) are given. */
  hoda?: { enabled?: boolean; benignHistogram: readonly number[]; thresholds: readonly HodaThreshold[] };
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

type Check = { integer?: boolean; min?: number; max?: number; minExclusive?: boolean; maxExclusive?: boolean; example: string };

function num(path: string, value: unknown, fallback: number, check: Check): number {
  if (value === undefined) return fallback;
  const low = check.min === undefined ? '' : `${check.minExclusive ? '>' : '≥'} ${check.min}`;
  const high = check.max === undefined ? '' : `${check.maxExclusive ? '<' : '≤'} ${check.max}`;
  const range = [low, high].filter(Boolean).join(' and ');
  const what = `${check.integer ? 'an integer' : 'a number'}${range ? ` ${range}` : ''}`;
  const bad = () =>
    new DetectionConfigError(`detection option ${path} must be ${what}, e.g. ${path.split('.').pop()}: ${check.example}; got ${JSON.stringify(value)}`);
  if (typeof value !== 'number' || !Number.isFinite(value)) throw bad();
  if (check.integer && !Number.isInteger(value)) throw bad();
  if (check.min !== undefined && (check.minExclusive ? value <= check.min : value < check.min)) throw bad();
  if (check.max !== undefined && (check.maxExclusive ? value >= check.max : value > check.max)) throw bad();
  return value;
}

function bool(path: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new DetectionConfigError(`detection option ${path} must be true or false; got ${JSON.stringify(value)}`);
  return value;
}

function object(path: string, value: unknown, known: readonly string[]): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new DetectionConfigError(`detection option ${path} must be an object with some of: ${known.join(', ')}; got ${JSON.stringify(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw new DetectionConfigError(`unknown detection option ${path}.${key}; write one of: ${known.join(', ')}`);
  }
  return value as Record<string, unknown>;
}

export function parseStep(text: unknown, index: number): PolicyStep {
  const path = `policy.steps[${index}]`;
  if (typeof text !== 'string' || text.trim() === '') {
    throw new DetectionConfigError(`detection option ${path} must be a tier name (e.g. "argmax"), "throttle:SECONDS" or "refuse"; got ${JSON.stringify(text)}`);
  }
  const step = text.trim();
  if (step === 'refuse') return { action: 'refuse' };
  if (step.startsWith('throttle')) {
    const match = /^throttle:(\d+)$/.exec(step);
    if (!match || Number(match[1]) < 1)
      throw new DetectionConfigError(`detection option ${path} "${step}": write "throttle:SECONDS" with whole seconds ≥ 1, e.g. "throttle:60"`);
    return { action: 'throttle', retryAfterSeconds: Number(match[1]) };
  }
  return { action: 'escalate', tier: step };
}

export function resolveOptions(options: DetectionOptions = {}): DetectionConfig {
  const top = object('detection', options, ['window', 'ood', 'prada', 'hoda', 'fingerprint', 'budget', 'policy']);
  const D = DEFAULT_OPTIONS;

  const w = object('window', top.window, ['lengthMs', 'bucketMs']);
  const lengthMs = num('window.lengthMs', w.lengthMs, D.window.lengthMs, { integer: true, min: 1000, example: '3600000' });
  const bucketMs = num('window.bucketMs', w.bucketMs, Math.min(D.window.bucketMs, lengthMs), {
    integer: true,
    min: 1,
    max: lengthMs,
    example: String(Math.min(D.window.bucketMs, lengthMs)),
  });
  if (lengthMs / bucketMs > 1000)
    throw new DetectionConfigError(
      `detection option window.bucketMs ${bucketMs} makes ${Math.ceil(lengthMs / bucketMs)} buckets; use at most 1000 (bucketMs ≥ ${Math.ceil(lengthMs / 1000)})`,
    );

  const o = object('ood', top.ood, ['enabled', 'confidenceThreshold', 'maxRate', 'minQueries']);
  const ood: OodConfig = {
    enabled: bool('ood.enabled', o.enabled, D.ood.enabled),
    confidenceThreshold: num('ood.confidenceThreshold', o.confidenceThreshold, D.ood.confidenceThreshold, {
      min: 0,
      max: 1,
      minExclusive: true,
      example: '0.7',
    }),
    maxRate: num('ood.maxRate', o.maxRate, D.ood.maxRate, { min: 0, max: 1, maxExclusive: true, example: '0.5' }),
    minQueries: num('ood.minQueries', o.minQueries, D.ood.minQueries, { integer: true, min: 1, example: '50' }),
  };

  const p = object('prada', top.prada, Object.keys(D.prada));
  const maxDistances = num('prada.maxDistances', p.maxDistances, D.prada.maxDistances, { integer: true, min: 20, max: SHAPIRO_WILK_MAX_N, example: '1000' });
  const prada: PradaConfig = {
    enabled: bool('prada.enabled', p.enabled, D.prada.enabled),
    delta: num('prada.delta', p.delta, D.prada.delta, { min: 0, max: 1, minExclusive: true, maxExclusive: true, example: '0.95 (published 0.9 to 0.99)' }),
    dims: num('prada.dims', p.dims, D.prada.dims, { integer: true, min: 2, max: 4096, example: '32' }),
    seed: num('prada.seed', p.seed, D.prada.seed, { integer: true, min: 0, max: 2 ** 32 - 1, example: '24301' }),
    maxKeptPerClass: num('prada.maxKeptPerClass', p.maxKeptPerClass, D.prada.maxKeptPerClass, { integer: true, min: 1, example: '32' }),
    maxKeptPoints: num('prada.maxKeptPoints', p.maxKeptPoints, D.prada.maxKeptPoints, { integer: true, min: 1, example: '320' }),
    maxDistances,
    minDistancesPerClass: num('prada.minDistancesPerClass', p.minDistancesPerClass, D.prada.minDistancesPerClass, { integer: true, min: 1, example: '10' }),
    minPooled: num('prada.minPooled', p.minPooled, Math.min(D.prada.minPooled, maxDistances - 1), {
      integer: true,
      min: 3,
      max: maxDistances - 1,
      example: '100',
    }),
    testEvery: num('prada.testEvery', p.testEvery, D.prada.testEvery, { integer: true, min: 1, example: '10' }),
  };

  let hoda: HodaConfig = { enabled: false, bins: 0, benignHistogram: [], thresholds: [] };
  if (top.hoda !== undefined) {
    const h = object('hoda', top.hoda, ['enabled', 'benignHistogram', 'thresholds']);
    const hint = 'pass the output of calibrateHoda(benignSequences, { bins: 11, lengths: [100, 1000] })';
    const histogram = h.benignHistogram;
    if (!Array.isArray(histogram) || histogram.length < 2 || !histogram.every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)) {
      throw new DetectionConfigError(`detection option hoda.benignHistogram must be an array of ≥ 2 non-negative numbers, one per hardness bin; ${hint}`);
    }
    if (histogram.every((v) => v === histogram[0])) {
      throw new DetectionConfigError(
        `detection option hoda.benignHistogram is flat: its Pearson distance to anything is undefined; ${hint} on real benign queries`,
      );
    }
    if (histogram.length > 255)
      throw new DetectionConfigError('detection option hoda.benignHistogram has more than 255 bins; use one bin per checkpoint (about 11)');
    const thresholds = h.thresholds;
    if (!Array.isArray(thresholds) || thresholds.length === 0)
      throw new DetectionConfigError(`detection option hoda.thresholds must be a non-empty array of { length, threshold }; ${hint}`);
    const parsed = thresholds.map((t, i) => {
      const entry = object(`hoda.thresholds[${i}]`, t, ['length', 'threshold', 'sequences']);
      return {
        length: num(`hoda.thresholds[${i}].length`, entry.length, Number.NaN, { integer: true, min: 1, max: 100_000, example: '100' }),
        threshold: num(`hoda.thresholds[${i}].threshold`, entry.threshold, Number.NaN, { min: 0, max: 2, example: '0.3' }),
      };
    });
    parsed.sort((a, b) => a.length - b.length);
    for (let i = 1; i < parsed.length; i++) {
      if (parsed[i].length === parsed[i - 1].length)
        throw new DetectionConfigError(`detection option hoda.thresholds has length ${parsed[i].length} twice; give one threshold per length`);
    }
    hoda = { enabled: bool('hoda.enabled', h.enabled, true), bins: histogram.length, benignHistogram: [...histogram], thresholds: parsed };
  }

  const f = object('fingerprint', top.fingerprint, ['enabled', 'minMatches', 'maxShare']);
  const fingerprint = {
    enabled: bool('fingerprint.enabled', f.enabled, D.fingerprint.enabled),
    minMatches: num('fingerprint.minMatches', f.minMatches, D.fingerprint.minMatches, { integer: true, min: 1, example: '5' }),
    maxShare: num('fingerprint.maxShare', f.maxShare, D.fingerprint.maxShare, { min: 0, max: 1, maxExclusive: true, example: '0.2' }),
  };

  let budget: DetectionConfig['budget'];
  if (top.budget !== false) {
    const b = object('budget', top.budget, ['maxQueries', 'action']);
    const action = b.action ?? D.budget.action;
    if (action !== 'throttle' && action !== 'refuse')
      throw new DetectionConfigError(`detection option budget.action must be "throttle" or "refuse"; got ${JSON.stringify(action)}`);
    budget = {
      maxQueries: num('budget.maxQueries', b.maxQueries, D.budget.maxQueries, { integer: true, min: 1, example: '10000 (or budget: false for none)' }),
      action,
    };
  }

  const pol = object('policy', top.policy, ['steps', 'release', 'stepQueries', 'calmQueries', 'calmMs']);
  const rawSteps = pol.steps ?? D.policy.steps;
  if (!Array.isArray(rawSteps))
    throw new DetectionConfigError('detection option policy.steps must be an array such as ["mad-argmax", "argmax", "throttle:60", "refuse"]');
  const steps = rawSteps.map(parseStep);
  const policy: PolicyConfig = {
    steps,
    release: num('policy.release', pol.release, D.policy.release, { min: 0, max: 1, minExclusive: true, maxExclusive: true, example: '0.8' }),
    stepQueries: num('policy.stepQueries', pol.stepQueries, D.policy.stepQueries, { integer: true, min: 1, example: '200' }),
    calmQueries: num('policy.calmQueries', pol.calmQueries, D.policy.calmQueries, { integer: true, min: 1, example: '500' }),
    calmMs: num('policy.calmMs', pol.calmMs, D.policy.calmMs, { integer: true, min: 0, example: '3600000' }),
  };

  return { window: { lengthMs, bucketMs }, ood, prada, hoda, fingerprint, budget, policy };
}
