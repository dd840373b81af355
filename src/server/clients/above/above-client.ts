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
import { createCohortDetection, type ClientDetectionWithConfig } from '../../../detection/client-detection.js';
import { fingerprintRows, resolveFingerprintOptions, type FingerprintConfig } from '../../../detection/above/fingerprint.js';
import { resolvePopulationOptions, summarise, type PopulationConfig } from '../../../detection/above/population.js';
import type { Assessment, ClientDetection, ClientObservation, DetectorVerdict } from '../../../detection/types.js';
import type { Defense } from '../../../defenses/index.js';
import { DetectionConfigError } from '../../../detection/errors.js';
import { ServingOptionError } from '../../errors.js';
import type { ServingMetrics } from '../../metrics.js';
import { COHORT_PREFIX, createCohortReader } from './cohort.js';
import { createMemoryFingerprintStore, createRedisFingerprintStore, type FingerprintStore } from './fingerprint-store.js';
import { createPopulationMetrics, type PopulationMetrics } from '../metrics.js';
import type { ClientsOptions } from '../options.js';
import { createPopulationTracker, VIEWS, type AlarmChange, type PopulationTracker, type PopulationView, type ViewStatus } from './population.js';
import type { RedisClientStore } from '../store-redis.js';
import type { StoredClient } from '../store.js';

export type ProbationReason = 'young' | 'suspect' | 'cohort';

export interface CohortSummary {
  id: string;
  action: Assessment['action'];
  score: number;
  verdicts: readonly DetectorVerdict[];
}

export interface PopulationOverview {
  youngQueries: number;
  tier?: string;
  views: Record<PopulationView, ViewStatus>;
}

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

const topScore = (verdicts: readonly DetectorVerdict[]): number => verdicts.reduce((m, v) => Math.max(m, Number.isFinite(v.score) ? v.score : 0), 0);

/** The probation tier: given, else escalationTier, else the ladder's first tier that keeps top-1, else mad-argmax / argmax when configured. */
function resolveProbationTier(
  options: ClientsOptions<never>,
  detection: ClientDetection,
  tiers: ReadonlyMap<string, Defense>,
): { name: string; defense: Defense } | undefined {
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

export function createAboveClient(options: ClientsOptions<never>, deps: AboveDeps): AboveClient | undefined {
  const { logger } = deps;
  const wantsCohorts = options.cohort !== undefined;
  const populationOptions = options.population ? options.population : undefined;
  const fingerprintOptions = options.fingerprints ? options.fingerprints : undefined;
  if (!wantsCohorts && !populationOptions && !fingerprintOptions) return undefined;

  const withConfig = deps.detection as Partial<ClientDetectionWithConfig>;
  const readCohort = wantsCohorts
    ? createCohortReader({ cohort: options.cohort as ClientsOptions['cohort'] & {}, trustProxy: options.trustProxy, idSecret: options.idSecret })
    : undefined;
  const cohortDetection = wantsCohorts
    ? (options.cohortDetection ?? (withConfig.options ? createCohortDetection(withConfig.options) : deps.detection))
    : undefined;

  let population: PopulationConfig | undefined;
  if (populationOptions) {
    const { flushMs: _flushMs, ...rest } = populationOptions;
    population = wrapConfigError('population', () => resolvePopulationOptions(rest));
  }
  let fingerprint: FingerprintConfig | undefined;
  if (fingerprintOptions) {
    const { maxEntries: _maxEntries, ttlMs: _ttlMs, ...rest } = fingerprintOptions;
    fingerprint = wrapConfigError('fingerprints', () => resolveFingerprintOptions(rest));
  }

  const probation = wantsCohorts || population ? resolveProbationTier(options, deps.detection, deps.tiers) : undefined;
  if ((wantsCohorts || population) && !probation) {
    throw new ServingOptionError(
      `cohort and population detection need a probation tier that keeps top-1: add one to tiers (e.g. "mad-argmax": "mad-argmax:eps=0.8" or "argmax": "argmax") and name it in clients.probationTier; configured: ${[...deps.tiers.keys()].join(', ') || 'none'}`,
    );
  }

  let tracker: PopulationTracker | undefined = population ? createPopulationTracker(population) : undefined;
  if (population && typeof deps.detection.history !== 'function') {
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
      probationTier: probation?.name,
    },
    'detection above the client on',
  );
  let fingerprints: FingerprintStore | undefined = fingerprint ? createMemoryFingerprintStore(fingerprint, fingerprintOptions) : undefined;

  const metrics: PopulationMetrics = createPopulationMetrics(deps.metrics, {
    views: () => {
      const status = tracker?.status();
      if (!status) return {};
      return Object.fromEntries(
        VIEWS.map((view) => [view, { alarm: status[view].alarm, scores: Object.fromEntries(status[view].verdicts.map((v) => [v.detector, v.score])) }]),
      );
    },
    fingerprintEntries: () => fingerprints?.size(),
  });

  let fingerprintFailed: ((error: unknown) => void) | undefined;
  // One request's fingerprints, reused: the stores read them before check returns.
  let prints = new Int32Array(0);
  /** Per row 1 when it shared matchThreshold hashes with a query of another identity (in place: the store's answer is this request's own). */
  const matchedRows = (shared: Uint8Array): Uint8Array => {
    let matched = 0;
    for (let r = 0; r < shared.length; r++) {
      shared[r] = shared[r] >= fingerprint!.matchThreshold ? 1 : 0;
      matched += shared[r];
    }
    if (matched) metrics.fingerprintMatches.inc(matched);
    return shared;
  };
  // The shared store failed: this request's rows count as unmatched (the outage is counted and logged).
  const storeFailed = (error: unknown): undefined => {
    fingerprintFailed?.(error);
    return undefined;
  };

  const logAlarm = (change: AlarmChange): void => {
    const evidence = Object.fromEntries(change.status.verdicts.map((v) => [v.detector, { flagged: v.flagged, score: v.score, ...v.evidence }]));
    if (change.started) {
      metrics.alarms.inc({ view: change.view });
      const flagged = change.status.verdicts.filter((v) => v.flagged).map((v) => v.detector);
      logger?.warn(
        { view: change.view, reason: `flagged by ${flagged.join(', ')}`, tier: probation?.name, youngQueries: population?.youngQueries, evidence },
        `population alarm started: young identities${population && population.suspectRate < 1 ? ' and suspects' : ''} get the probation tier`,
      );
    } else {
      logger?.info({ view: change.view, durationSeconds: Math.round((change.durationMs ?? 0) / 1000), evidence }, 'population alarm ended');
    }
  };

  const noteCohort = (cohortId: string, assessment: Assessment): void => {
    if (!assessment.changed) return;
    metrics.cohortChanges.inc({ action: assessment.action });
    const flagged = assessment.verdicts.filter((v) => v.flagged).map((v) => v.detector);
    logger?.warn(
      {
        cohort: cohortId,
        action: assessment.action,
        tier: assessment.action === 'default' ? undefined : probation?.name,
        reason: flagged.length ? `flagged by ${flagged.join(', ')}` : 'no detector flags the cohort now',
        evidence: Object.fromEntries(assessment.verdicts.map((v) => [v.detector, { flagged: v.flagged, score: v.score, ...v.evidence }])),
      },
      'cohort action changed',
    );
  };

  /** An older client whose own unsure share is above suspectRate (with at least 10 queries in its window). */
  const suspect = (own: Assessment): boolean => {
    if (!population) return false;
    const ood = own.verdicts.find((v) => v.detector === 'ood');
    const rate = ood?.evidence.rate;
    const queries = ood?.evidence.queries ?? 0;
    return typeof rate === 'number' && queries >= 10 && rate > population.suspectRate;
  };

  return {
    needsInputs: fingerprint !== undefined,
    cohortDetection,
    cohorts: wantsCohorts,
    cohortOf: (req, raw) => readCohort?.(req, raw),
    matches(clientId, inputs, time) {
      if (!fingerprint || !fingerprints || !inputs || inputs.rows === 0) return undefined;
      const size = inputs.rows * fingerprint.hashes;
      if (prints.length !== size) prints = new Int32Array(size);
      fingerprintRows(fingerprint, inputs.rows, inputs.cols, inputs.data, prints);
      let shared: Uint8Array | Promise<Uint8Array>;
      try {
        shared = fingerprints.check(clientId, prints, inputs.rows, time);
      } catch (error) {
        return storeFailed(error);
      }
      // The memory store answers at once: no promise to wait for on every request.
      return shared instanceof Promise ? shared.then(matchedRows, storeFailed) : matchedRows(shared);
    },
    noteCohort,
    after({ own, historyBefore, cohort, observation, anonymous, time }) {
      let young = false;
      if (tracker && population) {
        // The anonymous class is one shared history: in the `all` view, never young.
        young = !anonymous && historyBefore < population.youngQueries;
        const layout = tracker.layoutFor(observation.probs.cols);
        tracker.observe(summarise(layout, population.ood.confidenceThreshold, observation.probs, observation.hardness, observation.matches), young, time);
        for (const change of tracker.judge(time)) logAlarm(change);
      }
      if (!probation || own.action !== 'default') return undefined;
      if (cohort && cohort.action !== 'default') return 'cohort';
      if (tracker && !anonymous && (tracker.alarm('all') || tracker.alarm('young'))) {
        if (young) return 'young';
        if (suspect(own)) return 'suspect';
      }
      return undefined;
    },
    probationTier: probation?.defense,
    population: () => (tracker && population ? { youngQueries: population.youngQueries, tier: probation?.name, views: tracker.status() } : undefined),
    countProbation: (reason) => metrics.probation.inc({ reason }),
    overview(stored, time, limit) {
      const cohorts: CohortSummary[] = [];
      if (cohortDetection) {
        for (const { id, state } of stored) {
          if (!id.startsWith(COHORT_PREFIX)) continue;
          const a = cohortDetection.assess(state, time);
          cohorts.push({ id: id.slice(COHORT_PREFIX.length), action: a.action, score: topScore(a.verdicts), verdicts: a.verdicts });
        }
        const severity = { default: 0, escalate: 1, throttle: 2, refuse: 3 } as const;
        cohorts.sort((x, y) => severity[y.action] - severity[x.action] || y.score - x.score);
      }
      return {
        cohorts: cohorts.slice(0, limit),
        ...(tracker && population ? { population: { youngQueries: population.youngQueries, tier: probation?.name, views: tracker.status() } } : {}),
      };
    },
    attachRedis(store, onError, onSuccess) {
      if (population) {
        const previous = tracker;
        tracker = createPopulationTracker(population, {
          redis: store.connection,
          prefix: store.keyPrefix,
          flushMs: populationOptions?.flushMs ?? 1000,
          onError: (error) => onError('population', error),
          onSuccess,
          now: deps.now,
        });
        void previous?.close();
      }
      if (fingerprint) {
        fingerprints = createRedisFingerprintStore(store.connection, store.keyPrefix, fingerprint, fingerprintOptions);
        fingerprintFailed = (error) => onError('fingerprints', error);
      }
    },
    async close() {
      await tracker?.close();
      await fingerprints?.close();
    },
  };
}
