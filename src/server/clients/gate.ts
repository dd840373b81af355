/**
 * The per-request side of client detection:
 *   admit:   identity → the client's assessment (store read, `assess(state, now)`) → refuse (403),
 *            throttle (429 + Retry-After) or go on, before any model work; a paced client (a ladder
 *            throttle) goes on when it takes its slot, one request each SECONDS across replicas;
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
import type { ClientAction, ClientDetection, DetectorVerdict } from '../../detection/types.js';
import { ServingOptionError, type ServingError } from '../errors.js';
import type { ServingMetrics } from '../metrics.js';
import type { InputRows } from '../protocols/index.js';
import { createAboveClient, type AboveClient, type CohortSummary, type PopulationOverview } from './above/above-client.js';
import { ActionLog } from './gate/actions.js';
import { admit } from './gate/admit.js';
import { CohortQueue } from './gate/cohort-queue.js';
import type { GateContext } from './gate/context.js';
import { unreadableInputs } from './gate/inputs.js';
import { LISTING_READ_FACTOR, MAX_LISTED, overview, suspicious } from './gate/listing.js';
import { NewIdentityRule } from './gate/new-identities.js';
import { observe } from './gate/observe.js';
import { OutageFlags } from './gate/outage-flags.js';
import { StoreAccess } from './gate/store-access.js';
import { createRawIdentifier, type ClientIdentity } from './identity.js';
import { createClientMetrics, type ClientMetrics } from './metrics.js';
import { checkClientsOptions, type ClientsOptions } from './options.js';
import { createMemoryStore, DEFAULT_MEMORY_MAX_CLIENTS, type MemoryClientStore } from './store-memory.js';
import { createRedisStore } from './store-redis.js';

export { NEW_CLIENTS_DEFAULTS } from './gate/new-identities.js';
export { ClientRefusal } from './gate/refusal.js';

/** What admission learnt about one request, handed to `observe` once the answer is in. */
export interface ClientTicket {
  readonly client: ClientIdentity;
  /** The store failed for this request: the local fallback state is used, and the default defense at least. */
  degraded: boolean;
  /** The shared store held no state for this client at admission (a new identity, or one it forgot). */
  fresh?: boolean;
  /** The client's hashed cohort key (clients.cohort), when it has one. */
  cohort?: string;
  /** A paced client (a ladder throttle) that took its slot at admission: this answer goes on with the paced tier. */
  paced?: boolean;
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
  /** The clients with the most severe action and highest score first (hashed ids, evidence only); at most 500 (MAX_LISTED), from a bounded read of the store. */
  suspicious(limit: number): Promise<SuspiciousClient[]>;
  /** Population detection's views as of the last judgement (undefined without it): cheap, for dashboards and simulations. */
  populationStatus(): PopulationOverview | undefined;
  /** The admin route's listing: the suspicious clients, the cohorts (flagged first) and the population views; at most 500 (MAX_LISTED) of each. */
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

export function createClientGate(options: ClientsOptions<never>, deps: GateDeps): ClientGate {
  checkClientsOptions(options, [...deps.tiers.keys()]);
  if ((options.admin?.limit ?? 0) > MAX_LISTED) {
    throw new ServingOptionError(
      `clients.admin.limit is at most ${MAX_LISTED} (each admin request reads ${LISTING_READ_FACTOR} client states per client listed, tens of kilobytes each): write a limit of ${MAX_LISTED} or less`,
    );
  }
  const detection: ClientDetection = options.detection;
  const now = deps.now ?? options.clock ?? Date.now;
  const identify = createRawIdentifier({
    identity: options.identity as ClientsOptions['identity'],
    trustProxy: options.identity === 'ip' ? options.trustProxy : undefined,
    idSecret: options.idSecret,
  });
  const { logger } = deps;
  // Cohorts, population views and fingerprints (undefined when none is configured).
  const aboveClient = createAboveClient(options, { detection, tiers: deps.tiers, metrics: deps.metrics, logger, now });

  const storeOption = options.store ?? 'memory';
  const memoryOptions = typeof storeOption === 'object' && 'memory' in storeOption ? storeOption.memory : {};
  // The local store: the only store in memory mode, the fallback in Redis mode.
  const local: MemoryClientStore = createMemoryStore({ ...memoryOptions, now });
  const redisOptions = typeof storeOption === 'object' && 'redis' in storeOption ? storeOption : undefined;
  const shared = redisOptions ? createRedisStore(redisOptions) : undefined;
  shared?.catch(() => {});
  // Population counts and fingerprints go to the shared Redis once it is there (until then, and in memory mode, this process's).
  // Each is a part of its own for the outage lines: a failing fingerprint script must not end (or start) the client store's outage.
  void shared?.then(
    (store) =>
      aboveClient?.attachRedis(
        store,
        (operation, error) => stores.failed(operation, error, operation === 'population' ? 'population' : 'fingerprints'),
        () => stores.worked('population'),
      ),
    () => {},
  );
  const above = aboveClient && shared ? reportingFingerprints(aboveClient, () => stores.worked('fingerprints')) : aboveClient;

  const maxTracked = memoryOptions.maxClients ?? DEFAULT_MEMORY_MAX_CLIENTS;
  const stateTtlMs = (redisOptions ? redisOptions.ttlMs : memoryOptions.ttlMs) ?? 6 * 3600_000;
  const actions = new ActionLog(maxTracked);
  const metrics = createClientMetrics(deps.metrics, () => actions.counts());
  const flags = new OutageFlags(maxTracked, stateTtlMs, shared !== undefined);
  const newIdentities = new NewIdentityRule(options, deps.tiers, metrics, logger);
  const stores = new StoreAccess(local, shared, options.failMode ?? 'local', metrics, logger);
  const observeInputs = options.observeInputs ?? true;
  const ctx: GateContext = {
    options,
    detection,
    defense: deps.defense,
    tiers: deps.tiers,
    now,
    logger,
    identify,
    refuseAnonymous: options.anonymous === 'refuse',
    above,
    stores,
    metrics,
    actions,
    flags,
    newIdentities,
    cohorts: new CohortQueue(stores, logger),
    observeInputs,
  };

  return {
    store: stores.kind,
    // HODA's hardness is computed from the inputs, so they are read for it too.
    observeInputs: observeInputs || options.hardness !== undefined || above?.needsInputs === true,
    requiresInputs: (observeInputs && detection.needsInputs !== false) || options.hardness !== undefined || above?.needsInputs === true,
    unreadableInputs: (error) => unreadableInputs(ctx, error),
    metrics,
    admit: (req) => admit(ctx, req),
    observe: (ticket, probs, inputs, chosen) => observe(ctx, ticket, probs, inputs, chosen),
    suspicious: (limit) => suspicious(ctx, limit),
    overview: (limit) => overview(ctx, limit),
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

/**
 * The shared fingerprint store reports its failures (through attachRedis) but not its answers: the
 * lookups are watched here, so that its outage ends with a line once it answers again.
 */
function reportingFingerprints(above: AboveClient, answered: () => void): AboveClient {
  return {
    ...above,
    matches(clientId, inputs, time) {
      const rows = above.matches(clientId, inputs, time);
      // A promise is Redis's answer: rows when it answered, undefined when it failed (already reported).
      if (!(rows instanceof Promise)) return rows;
      return rows.then((matched) => {
        if (matched) answered();
        return matched;
      });
    },
  };
}
