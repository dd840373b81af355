/**
 * The options of detection above the client, resolved once when the gate is built: the cohort
 * reader and detection, the population and fingerprint configurations (checked by src/detection),
 * and the probation tier, which must keep top-1.
 */
import type { Logger } from 'pino';
import { type ClientDetectionWithConfig, createCohortDetection } from '../../../detection/client-detection.js';
import { type FingerprintConfig, resolveFingerprintOptions } from '../../../detection/above/fingerprint.js';
import { type PopulationConfig, resolvePopulationOptions } from '../../../detection/above/population.js';
import { DetectionConfigError } from '../../../detection/errors.js';
import type { ClientDetection } from '../../../detection/types.js';
import type { Defense } from '../../../defenses/index.js';
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

/** The probation tier: given, else escalationTier, else the ladder's first tier that keeps top-1, else mad-argmax / argmax when configured. */
function resolveProbationTier(options: ClientsOptions<never>, detection: ClientDetection, tiers: ReadonlyMap<string, Defense>): ProbationTier | undefined {
  const mapped = (policyTier: string) => options.tierNames?.[policyTier] ?? policyTier;
  const named = options.probationTier ?? options.escalationTier;
  if (named !== undefined) {
    const defense = tiers.get(named);
    if (!defense) throw new ServingOptionError(`the probation tier "${named}" is not in tiers (${[...tiers.keys()].join(', ') || 'none configured'})`);
    if (!defense.keepsTop1) {
      throw new ServingOptionError(
        `the probation tier of cohort and population detection must keep top-1 (honest newcomers keep their answers), and "${named}" (${defense.spec}) does not: set clients.probationTier to a tier such as "mad-argmax:eps=0.8" or "argmax"`,
      );
    }
    return { name: named, defense };
  }
  const steps = (detection as Partial<ClientDetectionWithConfig>).config?.policy?.steps ?? [];
  for (const step of steps) {
    if (step.action !== 'escalate') continue;
    const defense = tiers.get(mapped(step.tier));
    if (defense?.keepsTop1) return { name: mapped(step.tier), defense };
  }
  for (const name of ['mad-argmax', 'argmax']) {
    const defense = tiers.get(name);
    if (defense?.keepsTop1) return { name, defense };
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
      `cohort and population detection need a probation tier that keeps top-1: add one to tiers (e.g. "mad-argmax": "mad-argmax:eps=0.8" or "argmax": "argmax") and name it in clients.probationTier; configured: ${[...tiers.keys()].join(', ') || 'none'}`,
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
