/**
 * Detection above the client, for the gate: cohorts, population views and the shared fingerprint
 * store. A thief who spreads 10 000 queries over 200 keys sends 50 per key, under every per-client
 * detector; it is caught where its identities meet: in a cohort (one network prefix, tenant or key
 * prefix), in the population's young traffic, or in fingerprints that match across identities.
 *
 * Per answered request, around the client's own update (gate.observe):
 *   1. fingerprints (optional): the rows' fingerprints are looked up in, then written to, the shared
 *      store; a row matching a query of another identity is marked (observation.matches), which the
 *      client's `fingerprint` detector and the population's `matches` share count;
 *   2. the cohort's update (beside the client's, in the same store under `~cohort:<hashed key>`): the
 *      cohort detection (the client's detectors, no budget, one step) judges the cohort's traffic;
 *   3. population: the request's counts go to the `all` view and, for a young client (fewer than
 *      youngQueries queries before it), the `young` view; both are judged, alarms logged.
 * Then the answer's tier: the client's own escalation (or refusal) first; else, while its cohort is
 * flagged, the probation tier; else, while a population alarm holds, the probation tier for a young
 * client or a suspect (an older client whose own unsure share is above suspectRate). The probation
 * tier keeps top-1: honest newcomers keep their answers, older clients with a clean history keep
 * theirs untouched. Nothing here refuses or throttles: a cohort or a population holds honest clients.
 */
import type { Logger } from 'pino';
import type { Assessment, ClientDetection, ClientObservation } from '../../../detection/types.js';
import type { Defense } from '../../../defenses/index.js';
import type { ServingMetrics } from '../../metrics.js';
import { createPopulationMetrics } from '../metrics.js';
import type { ClientsOptions } from '../options.js';
import type { RedisClientStore } from '../store-redis.js';
import type { StoredClient } from '../store.js';
import { logAboveOn, resolveAboveConfig } from './above-config.js';
import type { createCohortReader } from './cohort.js';
import { listCohorts, noteCohortChange, type CohortSummary } from './cohort-report.js';
import { FingerprintLookup } from './fingerprint-lookup.js';
import { PopulationWatch, type PopulationOverview } from './population-watch.js';

export type { CohortSummary } from './cohort-report.js';
export type { PopulationOverview } from './population-watch.js';

export type ProbationReason = 'young' | 'suspect' | 'cohort';

export interface AboveClient {
  /** Fingerprints read the inputs. */
  readonly needsInputs: boolean;
  readonly cohortDetection: ClientDetection | undefined;
  readonly cohorts: boolean;
  /** The hashed cohort of a request, or undefined. */
  cohortOf(req: Parameters<ReturnType<typeof createCohortReader>>[0], raw: string | undefined): string | undefined;
  /**
   * Per row 1 when its fingerprint matched another identity's query; undefined without fingerprints or
   * inputs. At once with the memory store, a promise with Redis.
   */
  matches(
    clientId: string,
    inputs: { rows: number; cols: number; data: Float32Array } | undefined,
    time: number,
  ): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  /** Logs and counts a cohort's change of action. */
  noteCohort(cohortId: string, assessment: Assessment): void;
  /**
   * Adds the request to the population views and judges them; returns why the answer gets the
   * probation tier (undefined: it does not). `own` is the client's assessment after its update.
   */
  after(args: {
    own: Assessment;
    historyBefore: number;
    cohort: Assessment | undefined;
    observation: ClientObservation;
    anonymous: boolean;
    time: number;
  }): ProbationReason | undefined;
  readonly probationTier: Defense | undefined;
  countProbation(reason: ProbationReason): void;
  /** The population views as of the last judgement (undefined without population detection). */
  population(): PopulationOverview | undefined;
  /** Cohorts (from the store's listing) and the population views, for the admin route. */
  overview(stored: readonly StoredClient[], time: number, limit: number): { cohorts: CohortSummary[]; population?: PopulationOverview };
  /** Moves the population counts and fingerprints to the shared Redis (once it is connected). */
  attachRedis(store: RedisClientStore, onError: (operation: string, error: unknown) => void, onSuccess: () => void): void;
  close(): Promise<void>;
}

export interface AboveDeps {
  detection: ClientDetection;
  tiers: ReadonlyMap<string, Defense>;
  metrics: ServingMetrics;
  logger?: Logger;
  now: () => number;
}

export function createAboveClient(options: ClientsOptions<never>, deps: AboveDeps): AboveClient | undefined {
  const config = resolveAboveConfig(options, deps.detection, deps.tiers);
  if (!config) return undefined;
  const { logger } = deps;
  const { probation, cohortDetection } = config;
  logAboveOn(logger, options, config, deps.detection);
  // The gauges read the views and the fingerprint store when scraped.
  const metrics = createPopulationMetrics(deps.metrics, {
    views: () => population?.gauges() ?? {},
    fingerprintEntries: () => fingerprints?.size(),
  });
  const report = { metrics, logger, tier: probation?.name };
  const population = config.population ? new PopulationWatch(config.population, report) : undefined;
  const fingerprints = config.fingerprint
    ? new FingerprintLookup(config.fingerprint, config.fingerprintOptions, (rows) => metrics.fingerprintMatches.inc(rows), {
        logger,
        count: () => metrics.fingerprintGenerationsFull.inc(),
      })
    : undefined;

  return {
    needsInputs: fingerprints !== undefined,
    cohortDetection,
    cohorts: config.cohorts,
    cohortOf: (req, raw) => config.readCohort?.(req, raw),
    matches: (clientId, inputs, time) => fingerprints?.matches(clientId, inputs, time),
    noteCohort: (cohortId, assessment) => noteCohortChange(report, cohortId, assessment),
    after({ own, historyBefore, cohort, observation, anonymous, time }) {
      const young = population ? population.observe(observation, anonymous, historyBefore, time) : false;
      if (!probation || own.action !== 'default') return undefined;
      if (cohort && cohort.action !== 'default') return 'cohort';
      if (population && !anonymous && population.alarmed()) {
        if (young) return 'young';
        if (population.suspect(own)) return 'suspect';
      }
      return undefined;
    },
    probationTier: probation?.defense,
    population: () => population?.overview(),
    countProbation: (reason) => metrics.probation.inc({ reason }),
    overview: (stored, time, limit) => ({
      cohorts: listCohorts(cohortDetection, stored, time, limit),
      ...(population ? { population: population.overview() } : {}),
    }),
    attachRedis(store, onError, onSuccess) {
      population?.attachRedis(store, { flushMs: config.populationFlushMs ?? 1000, onError: (error) => onError('population', error), onSuccess, now: deps.now });
      fingerprints?.attachRedis(store, (error) => onError('fingerprints', error));
    },
    async close() {
      await population?.close();
      await fingerprints?.close();
    },
  };
}
