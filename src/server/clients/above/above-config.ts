/**
 * The options of detection above the client, resolved once when the gate is built: the cohort
 * reader and detection, the population and fingerprint configurations (checked by src/detection),
 * and the probation tier, which must keep top-1 and perturb the answer.
 */
import type { Logger } from 'pino';
import { type ClientDetectionWithConfig, createCohortDetection } from '../../../detection/client-detection.js';
import { type FingerprintConfig, resolveFingerprintOptions } from '../../../detection/above/fingerprint.js';
import { type PopulationConfig, resolvePopulationOptions } from '../../../detection/above/population.js';
import { DetectionConfigError } from '../../../detection/errors.js';
import type { ClientDetection } from '../../../detection/types.js';
import type { Defense, ProbBatch } from '../../../defenses/index.js';
import { softmaxInto } from '../../../defenses/math/simplex.js';
import { ServingOptionError } from '../../errors.js';
import type { ClientsOptions, FingerprintServingOptions } from '../options.js';
import { createCohortReader } from './cohort.js';

export interface ProbationTier {
  readonly name: string;
  readonly defense: Defense;
}

export interface AboveConfig {
  /** clients.cohort is set. */
  readonly cohorts: boolean;
  readonly readCohort: ReturnType<typeof createCohortReader> | undefined;
  readonly cohortDetection: ClientDetection | undefined;
  readonly population: PopulationConfig | undefined;
  /** clients.population.flushMs: how often the counts go to Redis. */
  readonly populationFlushMs: number | undefined;
  readonly fingerprint: FingerprintConfig | undefined;
  /** clients.fingerprints as given (the store's options among them). */
  readonly fingerprintOptions: FingerprintServingOptions | undefined;
  readonly probation: ProbationTier | undefined;
}

/** Distinct probabilities, exact in float32: a tier that passes any of them through (or only rescales them) shows it. */
const PROBE: ProbBatch = { rows: 2, cols: 4, data: Float32Array.of(0.4375, 0.28125, 0.171875, 0.109375, 0.0859375, 0.6015625, 0.21875, 0.09375) };

/** The probe's probabilities as a tier reads them: the rows as given, or (a tier built for logits) their softmax. */
const PROBE_READINGS: readonly Float32Array[] = [
  PROBE.data,
  (() => {
    const out = new Float32Array(PROBE.data.length);
    for (let r = 0; r < PROBE.rows; r++) softmaxInto(PROBE.data, r * PROBE.cols, PROBE.cols, out);
    return out;
  })(),
];

/**
 * Whether one answered row is the original's probabilities: every entry that is not a label (0 or 1)
 * as it was (all of them: `none`; those kept: `topk`), or two or more all rescaled by one factor
 * (`topk` renormalised). A defense that moves some entries and leaves others as they were (a sparse
 * perturbation) perturbs the answer and passes.
 */
function rowPasses(answered: Float32Array, original: Float32Array, offset: number, cols: number): boolean {
  let kept = 0;
  let exact = true;
  let ratio: number | undefined;
  let proportional = true;
  for (let c = offset; c < offset + cols; c++) {
    if (answered[c] === 0 || answered[c] === 1) continue;
    kept++;
    if (answered[c] !== original[c]) exact = false;
    ratio ??= answered[c] / original[c];
    if (Math.abs(answered[c] / original[c] - ratio) > 1e-6 * ratio) proportional = false;
  }
  return (kept >= 1 && exact) || (kept >= 2 && proportional);
}

/**
 * Whether the tier hands the model's probabilities to the client, in full or in part: unchanged
 * (`none`), some of them as they are (`topk`), or several rescaled (`topk` renormalised). Judged by
 * what the tier does to a probe, not by its name. A tier that needs context (a surrogate: MAD,
 * ModelGuard) perturbs with it and cannot be probed without it.
 */
export function passesProbabilities(defense: Defense): boolean {
  if (defense.needs.length > 0) return false;
  const answered = defense.apply(PROBE).data;
  return PROBE_READINGS.some((original) =>
    Array.from({ length: PROBE.rows }, (_, r) => r).some((r) => rowPasses(answered, original, r * PROBE.cols, PROBE.cols)),
  );
}

/** Why `defense` cannot be the probation tier (undefined: it can). */
function unfitForProbation(defense: Defense): string | undefined {
  if (!defense.keepsTop1) return "does not keep top-1 (honest newcomers must keep their answers' label)";
  if (passesProbabilities(defense)) return "passes the model's probabilities through (all, some, or rescaled), so probation would not defend";
  return undefined;
}

/**
 * The probation tier: given, else escalationTier, else the ladder's first tier fit for it, else the
 * first fit one among tiers (in the order given). Fit: it keeps top-1 and perturbs (see
 * unfitForProbation), judged by what the tier does, whatever its name.
 */
function resolveProbationTier(options: ClientsOptions<never>, detection: ClientDetection, tiers: ReadonlyMap<string, Defense>): ProbationTier | undefined {
  const mapped = (policyTier: string) => options.tierNames?.[policyTier] ?? policyTier;
  const named = options.probationTier ?? options.escalationTier;
  if (named !== undefined) {
    const defense = tiers.get(named);
    if (!defense) throw new ServingOptionError(`the probation tier "${named}" is not in tiers (${[...tiers.keys()].join(', ') || 'none configured'})`);
    const unfit = unfitForProbation(defense);
    if (unfit) {
      throw new ServingOptionError(
        `the probation tier of cohort and population detection must keep top-1 and perturb the answer, and "${named}" (${defense.spec}) ${unfit}: set clients.probationTier to a tier such as "mad-argmax:eps=0.8" or "argmax"`,
      );
    }
    return { name: named, defense };
  }
  const steps = (detection as Partial<ClientDetectionWithConfig>).config?.policy?.steps ?? [];
  const ladder = steps.filter((step) => step.action === 'escalate').map((step) => mapped(step.tier));
  for (const name of [...ladder, ...tiers.keys()]) {
    const defense = tiers.get(name);
    if (defense && !unfitForProbation(defense)) return { name, defense };
  }
  return undefined;
}

function wrapConfigError<T>(what: string, build: () => T): T {
  try {
    return build();
  } catch (error) {
    if (error instanceof DetectionConfigError) throw new ServingOptionError(`clients.${what}: ${error.message}`);
    throw error;
  }
}

/** The resolved configuration; undefined when neither cohorts, population nor fingerprints are configured. */
export function resolveAboveConfig(options: ClientsOptions<never>, detection: ClientDetection, tiers: ReadonlyMap<string, Defense>): AboveConfig | undefined {
  const cohorts = options.cohort !== undefined;
  const populationOptions = options.population ? options.population : undefined;
  const fingerprintOptions = options.fingerprints ? options.fingerprints : undefined;
  if (!cohorts && !populationOptions && !fingerprintOptions) return undefined;

  const withConfig = detection as Partial<ClientDetectionWithConfig>;
  const readCohort = cohorts
    ? createCohortReader({ cohort: options.cohort as ClientsOptions['cohort'] & {}, trustProxy: options.trustProxy, idSecret: options.idSecret })
    : undefined;
  const cohortDetection = cohorts ? (options.cohortDetection ?? (withConfig.options ? createCohortDetection(withConfig.options) : detection)) : undefined;

  let population: PopulationConfig | undefined;
  if (populationOptions) {
    const { flushMs: _flushMs, ...rest } = populationOptions;
    population = wrapConfigError('population', () => resolvePopulationOptions(rest));
  }
  let fingerprint: FingerprintConfig | undefined;
  if (fingerprintOptions) {
    const { maxEntries: _maxEntries, ttlMs: _ttlMs, maxEntriesPerIdentity: _maxEntriesPerIdentity, ...rest } = fingerprintOptions;
    fingerprint = wrapConfigError('fingerprints', () => resolveFingerprintOptions(rest));
  }

  const probation = cohorts || population ? resolveProbationTier(options, detection, tiers) : undefined;
  if ((cohorts || population) && !probation) {
    throw new ServingOptionError(
      `cohort and population detection need a probation tier that keeps top-1 and perturbs the answer: add one to tiers (e.g. "mad-argmax": "mad-argmax:eps=0.8" or "argmax": "argmax") and name it in clients.probationTier; configured: ${[...tiers.keys()].join(', ') || 'none'}`,
    );
  }
  return { cohorts, readCohort, cohortDetection, population, populationFlushMs: populationOptions?.flushMs, fingerprint, fingerprintOptions, probation };
}

/** Logs what is on (and warns when young identities can only be told by their absence from the store). */
export function logAboveOn(logger: Logger | undefined, options: ClientsOptions<never>, config: AboveConfig, detection: ClientDetection): void {
  const { population, fingerprint } = config;
  if (population && typeof detection.history !== 'function') {
    logger?.warn(
      'population detection: clients.detection has no history(state), so only identities new to the store count as young; build it with createClientDetection, or give history',
    );
  }
  logger?.info(
    {
      cohort: typeof options.cohort === 'function' ? 'function' : options.cohort,
      population: population
        ? {
            youngQueries: population.youngQueries,
            windowSeconds: population.window.lengthMs / 1000,
            minQueries: population.minQueries,
            oodMaxRate: population.ood.maxRate,
            hoda: population.hoda.enabled,
          }
        : false,
      fingerprints: fingerprint ? { window: fingerprint.window, hashes: fingerprint.hashes, matchThreshold: fingerprint.matchThreshold } : false,
      probationTier: config.probation?.name,
    },
    'detection above the client on',
  );
}
