/**
 * The per-request side of client detection:
 *   admit:   identity → the client's assessment (store read, `assess(state, now)`) → refuse (403),
 *            throttle (429 + Retry-After) or go on, before any model work;
 *   observe: after the answer is read, the model's original probabilities (and inputs) go into the
 *            store's atomic update (`observe`); the new assessment picks this answer's defense.
 *
 * The escalation applies to the current answer: the observation comes first, so the query that
 * crosses a threshold is already answered with the stronger tier (or refused). Applying it from the
 * next query on would hand the thief one more lightly defended answer per replica, for no saving:
 * the admission read is needed anyway, and the update must complete before the next admission.
 *
 * A store failure never opens the gate: failMode "refuse" answers 503; "local" goes on with this
 * process's own in-memory state and at least the default defense (a skipped defense is not honoured),
 * and keeps applying the refusals, throttles and escalations this process last saw the shared store
 * hold (a bounded cache, see flags below): a refused client stays refused through an outage.
 *
 * Only the store's own failures (ClientStoreError, a Redis that cannot answer) count as outages. An
 * answer the detectors cannot use (2 rows for 1 input row) is an answer error (502, withheld); a
 * detector that throws is a defense failure (500): neither is retried on the local store or logged
 * as an outage.
 *
 * Inputs: when a detector reads the inputs (PRADA; HODA through clients.hardness), a request whose
 * inputs cannot be read is refused (400, see unreadableInputs) instead of being observed blind.
 *
 * New identities cost something: identities are cheap (an unverified JWT sub, any header), and a
 * thief who takes a fresh one every few queries never builds the history the detectors need. While
 * more than newClients.maxPerMinute identities new to the store appeared in the last minute (counted
 * by this process), every client with fewer than historyQueries queries gets the newClients tier.
 */
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { Defense, ProbBatch } from '../../defenses/index.js';
import { DetectionInputError } from '../../detection/errors.js';
import type { Assessment, ClientAction, ClientDetection, ClientObservation, ClientState, DetectorVerdict } from '../../detection/types.js';
import { AnswerFormatError, RequestFormatError, ServingError, ServingOptionError } from '../errors.js';
import type { ServingMetrics } from '../metrics.js';
import type { InputRows } from '../protocols/index.js';
import { createAboveClient, type CohortSummary, type PopulationOverview } from './above/above-client.js';
import { COHORT_PREFIX } from './above/cohort.js';
import { createRawIdentifier, type ClientIdentity } from './identity.js';
import { CLIENT_ACTIONS, createClientMetrics, type ClientMetrics } from './metrics.js';
import { checkClientsOptions, type ClientsOptions, type StoreFailMode } from './options.js';
import { RankedMap } from './ranked-map.js';
import { MAX_RANK, type ClientStore } from './store.js';
import { createMemoryStore, DEFAULT_MEMORY_MAX_CLIENTS, type MemoryClientStore } from './store-memory.js';
import { createRedisStore } from './store-redis.js';

/** A request refused before (or instead of) its answer: status, message and headers (Retry-After). */
export class ClientRefusal extends ServingError {
  override name = 'ClientRefusal';
  constructor(
    message: string,
    status: number,
    outcome: 'client_refused' | 'client_throttled' | 'unidentified' | 'store_unavailable',
    override readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message, status, outcome, headers);
  }
}

/** What admission learnt about one request, handed to `observe` once the answer is in. */
export interface ClientTicket {
  readonly client: ClientIdentity;
  /** The store failed for this request: the local fallback state is used, and the default defense at least. */
  degraded: boolean;
  /** The shared store held no state for this client at admission (a new identity, or one it forgot). */
  fresh?: boolean;
  /** The client's hashed cohort key (clients.cohort), when it has one. */
  cohort?: string;
}

/** Per answer: undefined keeps the defense chosen for the request; a Defense replaces it. */
export type DefenseOverride = Defense | undefined;

export interface SuspiciousClient {
  id: string;
  action: ClientAction;
  tier?: string;
  score: number;
  verdicts: readonly DetectorVerdict[];
}

export interface ClientGate {
  readonly store: 'memory' | 'redis';
  readonly observeInputs: boolean;
  /**
   * A detector reads the inputs (the detection's needsInputs, unless observeInputs is false; or
   * clients.hardness): a request whose inputs cannot be read must then be refused, not observed blind.
   */
  readonly requiresInputs: boolean;
  /** Counts and logs a request refused because its inputs cannot be read; returns the error to answer with (400, or 413). */
  unreadableInputs(error: unknown): ServingError;
  readonly metrics: ClientMetrics;
  admit(req: IncomingMessage): Promise<ClientTicket>;
  observe(ticket: ClientTicket, probs: ProbBatch, inputs: InputRows | undefined, chosen: Defense | null): Promise<DefenseOverride>;
  /** The clients with the most severe action and highest score first (hashed ids, evidence only). */
  suspicious(limit: number): Promise<SuspiciousClient[]>;
  /** Population detection's views as of the last judgement (undefined without it): cheap, for dashboards and simulations. */
  populationStatus(): PopulationOverview | undefined;
  /** The admin route's listing: the suspicious clients, the cohorts (flagged first) and the population views. */
  overview(limit: number): Promise<{ clients: SuspiciousClient[]; cohorts?: CohortSummary[]; population?: PopulationOverview }>;
  /** Resolves once the store is connected (Redis); rejects if it could not connect. */
  ready(): Promise<void>;
  close(): Promise<void>;
}

export interface GateDeps {
  defense: Defense;
  tiers: ReadonlyMap<string, Defense>;
  metrics: ServingMetrics;
  logger?: Logger;
  now?: () => number;
}

/** Also the store's eviction rank: clean clients are forgotten first, refused ones last. */
const SEVERITY: Record<ClientAction, number> = { default: 0, escalate: 1, throttle: 2, refuse: 3 };

/** Defaults of the new-identity rule (clients.newClients). */
export const NEW_CLIENTS_DEFAULTS = { maxPerMinute: 600, historyQueries: 50 } as const;

/** What this process last saw the shared store say of a flagged client, kept for an outage. */
interface Remembered {
  readonly action: Exclude<ClientAction, 'default'>;
  readonly tier?: string;
  readonly retryAfterSeconds?: number;
  /** A detector flagged the client (a throttle from the ladder lasts while flagged; a budget throttle only its Retry-After). */
  readonly flagged: boolean;
  readonly seenAt: number;
}

/** The first escalation tier of the detection's own policy ladder, when it exposes one (createClientDetection does). */
function firstPolicyTier(detection: ClientDetection): string | undefined {
  const steps = (detection as { config?: { policy?: { steps?: readonly { action: string; tier?: string }[] } } }).config?.policy?.steps;
  return Array.isArray(steps) ? steps.find((step) => step.action === 'escalate')?.tier : undefined;
}

const flaggedBy = (assessment: Assessment): string => assessment.verdicts.find((v) => v.flagged)?.detector ?? 'none';
const topScore = (assessment: Assessment): number => assessment.verdicts.reduce((m, v) => Math.max(m, Number.isFinite(v.score) ? v.score : 0), 0);

export function createClientGate(options: ClientsOptions<never>, deps: GateDeps): ClientGate {
  checkClientsOptions(options, [...deps.tiers.keys()]);
  const detection: ClientDetection = options.detection;
  const now = deps.now ?? options.clock ?? Date.now;
  const failMode: StoreFailMode = options.failMode ?? 'local';
  const identify = createRawIdentifier({
    identity: options.identity as ClientsOptions['identity'],
    trustProxy: options.identity === 'ip' ? options.trustProxy : undefined,
    idSecret: options.idSecret,
  });
  const refuseAnonymous = options.anonymous === 'refuse';
  const { logger } = deps;
  // Cohorts, population views and fingerprints (undefined when none is configured).
  const above = createAboveClient(options, { detection, tiers: deps.tiers, metrics: deps.metrics, logger, now });

  const storeOption = options.store ?? 'memory';
  const memoryOptions = typeof storeOption === 'object' && 'memory' in storeOption ? storeOption.memory : {};
  // The local store: the only store in memory mode, the fallback in Redis mode.
  const local: MemoryClientStore = createMemoryStore({ ...memoryOptions, now });
  const redisOptions = typeof storeOption === 'object' && 'redis' in storeOption ? storeOption : undefined;
  const shared = redisOptions ? createRedisStore(redisOptions) : undefined;
  shared?.catch(() => {});
  const storeKind = shared ? 'redis' : 'memory';
  // Population counts and fingerprints go to the shared Redis once it is there (until then, and in memory mode, this process's).
  void shared?.then(
    (store) =>
      above?.attachRedis(
        store,
        (operation, error) => storeFailed(operation, error),
        () => storeWorked(),
      ),
    () => {},
  );

  const maxTracked = memoryOptions.maxClients ?? DEFAULT_MEMORY_MAX_CLIENTS;
  const stateTtlMs = (redisOptions ? redisOptions.ttlMs : memoryOptions.ttlMs) ?? 6 * 3600_000;
  // Last known action per client seen by this process, for the clients-by-action gauge (bounded like the local store;
  // flagged clients kept longest). With the tier, so that a change is logged once, where this process first sees it.
  const actions = new RankedMap<{ action: ClientAction; tier?: string }>(maxTracked, MAX_RANK + 1);
  const noteAction = (id: string, { action, tier }: Assessment): void => {
    actions.set(id, { action, tier }, SEVERITY[action]);
  };
  const metrics = createClientMetrics(deps.metrics, () => {
    const counts = {} as Record<ClientAction, number>;
    for (const action of CLIENT_ACTIONS) counts[action] = actions.count(SEVERITY[action]);
    return counts;
  });

  // What the shared store last said of each flagged client this process saw (refused, throttled,
  // escalated; bounded, the escalated forgotten first): applied through an outage, so that a Redis
  // failure in "local" mode does not serve a refused client again.
  const flags = new RankedMap<Remembered>(maxTracked, MAX_RANK + 1);
  const remember = (id: string, assessment: Assessment, time: number): void => {
    if (!shared) return;
    if (assessment.action === 'default') {
      flags.delete(id);
      return;
    }
    flags.set(
      id,
      {
        action: assessment.action,
        tier: assessment.tier,
        retryAfterSeconds: assessment.retryAfterSeconds,
        flagged: assessment.verdicts.some((v) => v.flagged),
        seenAt: time,
      },
      SEVERITY[assessment.action],
    );
  };
  /** The remembered action still in force at `time`, as an assessment (undefined: none). */
  const recalled = (id: string, time: number): Assessment | undefined => {
    const r = flags.get(id);
    if (!r || time - r.seenAt >= stateTtlMs) return undefined;
    let retryAfterSeconds: number | undefined;
    if (r.action === 'throttle') {
      const seconds = r.retryAfterSeconds ?? 60;
      const left = (r.seenAt + seconds * 1000 - time) / 1000;
      // A budget throttle (no detector flagged) ends with its Retry-After; a ladder throttle lasts while flagged.
      if (left <= 0 && !r.flagged) return undefined;
      retryAfterSeconds = left > 0 ? left : seconds;
    }
    const evidence = { ageSeconds: Math.round((time - r.seenAt) / 1000) };
    return {
      action: r.action,
      ...(r.tier !== undefined ? { tier: r.tier } : {}),
      ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}),
      changed: false,
      verdicts: [{ detector: 'remembered', flagged: true, score: 0, evidence }],
    };
  };
  const stronger = (a: Assessment | undefined, b: Assessment | undefined): Assessment | undefined =>
    !a ? b : !b ? a : SEVERITY[b.action] > SEVERITY[a.action] ? b : a;

  // The new-identity rule: identities new to the store per minute (this process's count, a sliding
  // window over two one-minute buckets); above the limit, clients with little history get a tier.
  const newClients = options.newClients === false ? undefined : { ...NEW_CLIENTS_DEFAULTS, ...(options.newClients ?? {}) };
  const policyTier = firstPolicyTier(detection);
  const probationTierName = newClients
    ? ((options.newClients ? options.newClients.tier : undefined) ??
      options.escalationTier ??
      (policyTier !== undefined ? (options.tierNames?.[policyTier] ?? policyTier) : undefined))
    : undefined;
  const probationTier = probationTierName !== undefined ? deps.tiers.get(probationTierName) : undefined;
  if (newClients && options.newClients && !probationTier) {
    throw new ServingOptionError(
      `clients.newClients needs a tier for clients on probation: set newClients.tier (or escalationTier) to one of tiers (${[...deps.tiers.keys()].join(', ') || 'none configured'}), or newClients: false`,
    );
  }
  if (newClients && !probationTier)
    logger?.info({ tiers: [...deps.tiers.keys()] }, 'new-identity rule off: no tier to give new clients (set clients.newClients.tier or escalationTier)');
  const MINUTE = 60_000;
  let newBucket = 0;
  let newCurrent = 0;
  let newPrevious = 0;
  let flooding = false;
  const newRate = (time: number): number => {
    const start = Math.floor(time / MINUTE) * MINUTE;
    if (start !== newBucket) {
      newPrevious = start - newBucket === MINUTE ? newCurrent : 0;
      newCurrent = 0;
      newBucket = start;
    }
    return newPrevious * (1 - (time - start) / MINUTE) + newCurrent;
  };
  const floodAt = (time: number): boolean => {
    if (!newClients || !probationTier) return false;
    const rate = newRate(time);
    const over = rate > newClients.maxPerMinute;
    if (over !== flooding) {
      if (over)
        logger?.warn(
          { newPerMinute: Math.round(rate), limit: newClients.maxPerMinute, tier: probationTierName, historyQueries: newClients.historyQueries },
          'new client identities over the limit: clients with little history get the probation tier',
        );
      else logger?.info({ newPerMinute: Math.round(rate), limit: newClients.maxPerMinute }, 'new client identities back under the limit');
    }
    flooding = over;
    return over;
  };
  const noteNewIdentity = (time: number): void => {
    metrics.newIdentities.inc();
    newRate(time);
    newCurrent++;
    floodAt(time);
  };

  let outage = false;
  const storeFailed = (operation: string, error: unknown): void => {
    metrics.storeErrors.inc({ store: storeKind, operation });
    if (!outage) logger?.error({ store: storeKind, operation, failMode, err: (error as Error)?.message }, 'client store unavailable');
    outage = true;
  };
  const storeWorked = (): void => {
    if (outage) logger?.info({ store: storeKind }, 'client store available again');
    outage = false;
  };

  /** Reads through the shared store, or the local one; on a shared-store failure, the fail mode decides. */
  const withStore = async <T>(
    ticket: ClientTicket | undefined,
    operation: string,
    run: (store: ClientStore) => Promise<T>,
  ): Promise<{ value: T; degraded: boolean; local?: boolean }> => {
    if (!shared) return { value: await run(local), degraded: false };
    try {
      const value = await run(await shared);
      storeWorked();
      return { value, degraded: ticket?.degraded ?? false };
    } catch (error) {
      // Not the store: a refusal, or an answer the detectors cannot use (see step in observe).
      if (error instanceof ServingError) throw error;
      storeFailed(operation, error);
      if (failMode === 'refuse')
        throw new ClientRefusal('the client store is unavailable, so the request was refused; retry later', 503, 'store_unavailable', { 'retry-after': '5' });
      metrics.degraded.inc();
      return { value: await run(local), degraded: true, local: true };
    }
  };

  const refusalFor = (assessment: Assessment): ClientRefusal | undefined => {
    if (assessment.action === 'refuse') return new ClientRefusal('this client is refused: its queries look like model extraction', 403, 'client_refused');
    if (assessment.action === 'throttle') {
      const seconds = Math.max(1, Math.ceil(assessment.retryAfterSeconds ?? 60));
      return new ClientRefusal(`this client is throttled; retry after ${seconds} s`, 429, 'client_throttled', { 'retry-after': String(seconds) });
    }
    return undefined;
  };

  const countAction = (assessment: Assessment): void => {
    if (assessment.action !== 'default') metrics.actions.inc({ action: assessment.action, detector: flaggedBy(assessment) });
  };

  const admit = async (req: IncomingMessage): Promise<ClientTicket> => {
    const { identity: client, raw } = identify(req);
    if (client.anonymous && refuseAnonymous) throw new ClientRefusal('a client identity is required (see the server’s clients.identity)', 401, 'unidentified');
    const time = now();
    const { value: state, degraded } = await withStore(undefined, 'read', (store) => store.get(client.id));
    const cohort = above?.cohortOf(req, raw);
    const ticket: ClientTicket = { client, degraded, fresh: !degraded && state === undefined, ...(cohort !== undefined ? { cohort } : {}) };
    let assessment = state === undefined ? undefined : detection.assess(state, time);
    if (degraded) {
      // The shared store is out: what it last said of this client still holds (refused stays refused).
      assessment = stronger(assessment, recalled(client.id, time));
    } else if (ticket.fresh) {
      flags.delete(client.id);
      if (!client.anonymous) noteNewIdentity(time);
    } else {
      remember(client.id, assessment!, time);
    }
    if (assessment === undefined) return ticket;
    // A change by time alone (a throttle that ran out) is logged here, where it is first seen.
    const previous = actions.get(client.id);
    if (previous !== undefined && (previous.action !== assessment.action || previous.tier !== assessment.tier))
      logChange(client.id, assessment, previous.action);
    noteAction(client.id, assessment);
    const refusal = refusalFor(assessment);
    if (refusal) {
      countAction(assessment);
      throw refusal;
    }
    return ticket;
  };

  const tierDefense = (assessment: Assessment): Defense => {
    const policyTier = assessment.tier;
    const name = policyTier !== undefined ? (options.tierNames?.[policyTier] ?? policyTier) : options.escalationTier;
    const tier = name === undefined ? undefined : deps.tiers.get(name);
    if (!tier)
      throw new ServingError(
        `the detection policy escalated to tier "${name ?? '(none named)'}", which is not configured in tiers (${[...deps.tiers.keys()].join(', ') || 'none'})`,
        500,
        'defense_failed',
      );
    return tier;
  };

  const logChange = (id: string, assessment: Assessment, previous: ClientAction | undefined): void => {
    metrics.actionChanges.inc({ action: assessment.action, detector: flaggedBy(assessment) });
    const flagged = assessment.verdicts.filter((v) => v.flagged).map((v) => v.detector);
    logger?.warn(
      {
        client: id,
        action: assessment.action,
        previous,
        tier: assessment.tier,
        retryAfterSeconds: assessment.retryAfterSeconds,
        reason: flagged.length ? `flagged by ${flagged.join(', ')}` : 'no detector flags the client now',
        evidence: Object.fromEntries(assessment.verdicts.map((v) => [v.detector, { flagged: v.flagged, score: v.score, ...v.evidence }])),
      },
      'client action changed',
    );
  };

  const observeInputs = options.observeInputs ?? true;
  const hardnessOf = async (rows: InputRows): Promise<Int8Array> => {
    let hardness: Int8Array;
    try {
      hardness = await options.hardness!(rows);
    } catch (error) {
      throw new ServingError(`clients.hardness failed: ${(error as Error).message}`, 500, 'defense_failed');
    }
    if (!(hardness instanceof Int8Array) || hardness.length !== rows.rows)
      throw new ServingError(`clients.hardness must return an Int8Array of ${rows.rows} values (one per row)`, 500, 'defense_failed');
    return hardness;
  };

  /**
   * What detection.observe throws is no store failure: an observation it rejects is the answer's
   * fault (502 behind the proxy), anything else a detection failure (500, its cause logged, not told).
   */
  const detectionFailure = (error: unknown): ServingError => {
    if (error instanceof DetectionInputError)
      return new AnswerFormatError(`model answer: client detection cannot use it (${error.message}), so it was withheld`);
    logger?.error({ err: (error as Error)?.message ?? String(error) }, 'client detection failed');
    return new ServingError('client detection failed, so the answer was withheld', 500, 'defense_failed');
  };

  /**
   * A cohort's updates are group-committed: while one is in flight (a Redis round trip), the
   * observations of the cohort's other requests queue and go in the next one, all applied in order in
   * one atomic update. A large cohort (a /24 behind a NAT, a big tenant) is one key that every member's
   * request updates: one at a time, it would serialise them all on the store's round trip.
   */
  interface CohortWaiter {
    observation: ClientObservation;
    resolve(result: CohortResult): void;
    reject(error: unknown): void;
  }
  interface CohortResult {
    assessment: Assessment;
    /** Judged on the local store: the shared one failed. */
    local: boolean;
  }
  const cohortQueues = new Map<string, CohortWaiter[]>();
  const COHORT_BATCH = 256;
  const drainCohort = async (ticket: ClientTicket, cohort: string, judge: ClientDetection, queue: CohortWaiter[]): Promise<void> => {
    while (queue.length > 0) {
      const batch = queue.splice(0, COHORT_BATCH);
      try {
        const { value, local: usedLocal } = await withStore(ticket, 'update', (store) =>
          store.update(COHORT_PREFIX + cohort, (state) => {
            let current = state;
            const assessments: Assessment[] = [];
            for (const waiter of batch) {
              let observed: ReturnType<ClientDetection['observe']>;
              try {
                observed = judge.observe(current ?? judge.initialState(waiter.observation.time), waiter.observation);
              } catch (error) {
                throw detectionFailure(error);
              }
              current = observed.state;
              assessments.push(observed.assessment);
            }
            return { state: current!, result: assessments, rank: SEVERITY[assessments[assessments.length - 1].action] };
          }),
        );
        batch.forEach((waiter, i) => waiter.resolve({ assessment: value[i], local: usedLocal === true }));
      } catch (error) {
        for (const waiter of batch) waiter.reject(error);
      }
    }
    cohortQueues.delete(cohort);
  };
  const cohortUpdate = (ticket: ClientTicket, judge: ClientDetection, observation: ClientObservation): Promise<CohortResult> =>
    new Promise((resolve, reject) => {
      const cohort = ticket.cohort!;
      let queue = cohortQueues.get(cohort);
      const start = !queue;
      if (!queue) cohortQueues.set(cohort, (queue = []));
      queue.push({ observation, resolve, reject });
      if (start) void drainCohort(ticket, cohort, judge, queue);
    });

  const observe = async (ticket: ClientTicket, probs: ProbBatch, inputs: InputRows | undefined, chosen: Defense | null): Promise<DefenseOverride> => {
    const time = now();
    // An answer with other rows than the request is the model's fault, found before the store is touched.
    if (inputs && inputs.rows !== probs.rows) throw new AnswerFormatError(`model answer: ${probs.rows} rows for ${inputs.rows} input rows`);
    const rows = inputs ? { rows: inputs.rows, cols: inputs.cols, data: inputs.data } : undefined;
    const hardness = inputs && options.hardness ? await hardnessOf(inputs) : undefined;
    const matching = above?.matches(ticket.client.id, rows, time);
    const matches = matching instanceof Promise ? await matching : matching;
    const observation = { time, probs, ...(rows && observeInputs ? { inputs: rows } : {}), ...(hardness ? { hardness } : {}), ...(matches ? { matches } : {}) };
    const stepWith = (judge: ClientDetection) => (state: ClientState | undefined) => {
      let observed: ReturnType<ClientDetection['observe']>;
      try {
        observed = judge.observe(state ?? judge.initialState(time), observation);
      } catch (error) {
        throw detectionFailure(error);
      }
      const history = judge.history ? judge.history(observed.state) : undefined;
      return { state: observed.state, result: { assessment: observed.assessment, history }, rank: SEVERITY[observed.assessment.action] };
    };
    const previous = actions.get(ticket.client.id);
    // The cohort's update runs beside the client's (another key of the same store).
    const cohortJudge = ticket.cohort !== undefined ? above?.cohortDetection : undefined;
    const [{ value, degraded, local: usedLocal }, cohortResult] = await Promise.all([
      withStore(ticket, 'update', (store) => store.update(ticket.client.id, stepWith(detection))),
      // In memory an update is synchronous: nothing to group.
      cohortJudge
        ? shared
          ? cohortUpdate(ticket, cohortJudge, observation)
          : withStore(ticket, 'update', (store) => store.update(COHORT_PREFIX + ticket.cohort, stepWith(cohortJudge))).then(
              ({ value: v, local }): CohortResult => ({ assessment: v.assessment, local: local === true }),
            )
        : undefined,
    ]);
    let cohortAssessment = cohortResult?.assessment;
    if (cohortAssessment && shared) {
      // Through an outage the cohort is judged on this process's local state, which never saw it
      // flagged: what the shared store last said of it holds, as for a client.
      const cohortId = COHORT_PREFIX + ticket.cohort;
      if (cohortResult!.local) cohortAssessment = stronger(cohortAssessment, recalled(cohortId, time))!;
      else remember(cohortId, cohortAssessment, time);
    }
    if (cohortAssessment) above!.noteCohort(ticket.cohort!, cohortAssessment);
    let assessment: Assessment = value.assessment;
    // Every observed request counts in the population views (escalated and refused clients' too).
    const historyBefore = value.history !== undefined ? value.history - probs.rows : ticket.fresh ? 0 : Infinity;
    const probation = above?.after({
      own: assessment,
      historyBefore,
      cohort: cohortAssessment,
      observation,
      anonymous: ticket.client.anonymous,
      time,
    });
    for (const verdict of assessment.verdicts) metrics.evaluations.inc({ detector: verdict.detector, flagged: String(verdict.flagged) });
    if (usedLocal) assessment = stronger(assessment, recalled(ticket.client.id, time))!;
    else remember(ticket.client.id, assessment, time);
    noteAction(ticket.client.id, assessment);
    // `changed` compares with the action at the client's last observation; a change by time alone was
    // already logged at admission (previous then holds the new action and tier), so log it only once.
    if (assessment.changed && (previous?.action !== assessment.action || previous.tier !== assessment.tier))
      logChange(ticket.client.id, assessment, previous?.action);
    countAction(assessment);
    const refusal = refusalFor(assessment);
    if (refusal) throw refusal;
    if (assessment.action === 'escalate') return tierDefense(assessment);
    // Detection above the client: the cohort flagged, or a population alarm and a young (or suspect)
    // client; the probation tier keeps top-1. A tier chooseDefense picked for the request stays.
    if (above && probation && above.probationTier && (chosen === null || chosen === deps.defense)) {
      above.countProbation(probation);
      return above.probationTier;
    }
    // New identities coming fast: a client without history yet gets the probation tier instead of the
    // default defense (or a skipped one); a tier chooseDefense picked for the request stays.
    if (probationTier && newClients && (chosen === null || chosen === deps.defense) && !ticket.client.anonymous) {
      const history = value.history ?? (ticket.fresh ? 0 : Infinity);
      if (history < newClients.historyQueries && floodAt(time)) {
        metrics.probation.inc();
        return probationTier;
      }
    }
    // Without the shared state, the chosen defense may not be skipped: the default one at least.
    if ((degraded || ticket.degraded) && chosen === null) return deps.defense;
    return undefined;
  };

  const listed = async () => (await withStore(undefined, 'list', (store) => store.list(10_000))).value;
  const suspiciousOf = (stored: Awaited<ReturnType<typeof listed>>, limit: number): SuspiciousClient[] => {
    const time = now();
    return stored
      .filter(({ id }) => !id.startsWith(COHORT_PREFIX))
      .map(({ id, state }) => {
        const a = detection.assess(state, time);
        return { id, action: a.action, tier: a.tier, score: topScore(a), verdicts: a.verdicts };
      })
      .sort((x, y) => SEVERITY[y.action] - SEVERITY[x.action] || y.score - x.score)
      .slice(0, limit);
  };
  const suspicious = async (limit: number): Promise<SuspiciousClient[]> => suspiciousOf(await listed(), limit);
  const overview = async (limit: number) => {
    const stored = await listed();
    const clients = suspiciousOf(stored, limit);
    if (!above) return { clients };
    return { clients, ...above.overview(stored, now(), limit) };
  };

  const requiresInputs = (observeInputs && detection.needsInputs !== false) || options.hardness !== undefined || above?.needsInputs === true;
  const unreadableInputs = (error: unknown): ServingError => {
    metrics.unreadableInputs.inc();
    const status = error instanceof ServingError && error.status === 413 ? 413 : 400;
    // No body content in the log: the reader's message may quote the request (tensor names, values).
    logger?.warn(
      { status, err: (error as Error)?.name ?? 'Error' },
      'request refused: client detection cannot read its inputs (configure where they are, e.g. the input name)',
    );
    const why = error instanceof ServingError ? error.message : 'they are not in a form the server reads';
    return new RequestFormatError(
      `client detection needs this request's model inputs, which could not be read (${why}); the request was not served. The server must be told where the inputs are (e.g. the input tensor's name: --input-name / protocol.inputName, or the image options)`,
      status,
    );
  };

  return {
    store: storeKind,
    // HODA's hardness is computed from the inputs, so they are read for it too.
    observeInputs: observeInputs || options.hardness !== undefined || above?.needsInputs === true,
    requiresInputs,
    unreadableInputs,
    metrics,
    admit,
    observe,
    suspicious,
    overview,
    populationStatus: () => above?.population(),
    ready: async () => {
      if (shared) await (await shared).ready();
    },
    close: async () => {
      await above?.close();
      await local.close();
      if (shared) await (await shared.catch(() => undefined))?.close();
    },
  };
}
