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
 * process's own in-memory state and at least the default defense (a skipped defense is not honoured).
 */
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { Defense, ProbBatch } from '../../defenses/index.js';
import type { Assessment, ClientAction, ClientDetection, ClientState, DetectorVerdict } from '../../detection/types.js';
import { ServingError } from '../errors.js';
import type { ServingMetrics } from '../metrics.js';
import type { InputRows } from '../protocols/index.js';
import { createIdentifier, type ClientIdentity } from './identity.js';
import { CLIENT_ACTIONS, createClientMetrics, type ClientMetrics } from './metrics.js';
import { checkClientsOptions, type ClientsOptions, type StoreFailMode } from './options.js';
import type { ClientStore } from './store.js';
import { createMemoryStore, type MemoryClientStore } from './store-memory.js';
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
  readonly metrics: ClientMetrics;
  admit(req: IncomingMessage): Promise<ClientTicket>;
  observe(ticket: ClientTicket, probs: ProbBatch, inputs: InputRows | undefined, chosen: Defense | null): Promise<DefenseOverride>;
  /** The clients with the most severe action and highest score first (hashed ids, evidence only). */
  suspicious(limit: number): Promise<SuspiciousClient[]>;
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

const SEVERITY: Record<ClientAction, number> = { default: 0, escalate: 1, throttle: 2, refuse: 3 };

const flaggedBy = (assessment: Assessment): string => assessment.verdicts.find((v) => v.flagged)?.detector ?? 'none';
const topScore = (assessment: Assessment): number => assessment.verdicts.reduce((m, v) => Math.max(m, Number.isFinite(v.score) ? v.score : 0), 0);

export function createClientGate(options: ClientsOptions<never>, deps: GateDeps): ClientGate {
  checkClientsOptions(options, [...deps.tiers.keys()]);
  const detection: ClientDetection = options.detection;
  const now = deps.now ?? Date.now;
  const failMode: StoreFailMode = options.failMode ?? 'local';
  const identify = createIdentifier({ identity: options.identity as ClientsOptions['identity'], trustProxy: options.trustProxy, idSecret: options.idSecret });
  const refuseAnonymous = options.anonymous === 'refuse';
  const { logger } = deps;

  const storeOption = options.store ?? 'memory';
  const memoryOptions = typeof storeOption === 'object' && 'memory' in storeOption ? storeOption.memory : {};
  // The local store: the only store in memory mode, the fallback in Redis mode.
  const local: MemoryClientStore = createMemoryStore({ ...memoryOptions, now });
  const redisOptions = typeof storeOption === 'object' && 'redis' in storeOption ? storeOption : undefined;
  const shared = redisOptions ? createRedisStore(redisOptions) : undefined;
  shared?.catch(() => {});
  const storeKind = shared ? 'redis' : 'memory';

  const maxTracked = memoryOptions.maxClients ?? 100_000;
  // Last known action per client seen by this process, for the clients-by-action gauge (bounded like the local store).
  // With the tier, so that a change is logged once, where this process first sees it.
  const actions = new Map<string, { action: ClientAction; tier?: string }>();
  const noteAction = (id: string, { action, tier }: Assessment): void => {
    actions.delete(id);
    actions.set(id, { action, tier });
    while (actions.size > maxTracked) actions.delete(actions.keys().next().value as string);
  };
  const metrics = createClientMetrics(deps.metrics, () => {
    const counts = Object.fromEntries(CLIENT_ACTIONS.map((a) => [a, 0])) as Record<ClientAction, number>;
    for (const { action } of actions.values()) counts[action]++;
    return counts;
  });

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
  const withStore = async <T>(ticket: ClientTicket | undefined, operation: string, run: (store: ClientStore) => Promise<T>): Promise<{ value: T; degraded: boolean }> => {
    if (!shared) return { value: await run(local), degraded: false };
    try {
      const value = await run(await shared);
      storeWorked();
      return { value, degraded: ticket?.degraded ?? false };
    } catch (error) {
      storeFailed(operation, error);
      if (failMode === 'refuse') throw new ClientRefusal('the client store is unavailable, so the request was refused; retry later', 503, 'store_unavailable', { 'retry-after': '5' });
      metrics.degraded.inc();
      return { value: await run(local), degraded: true };
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
    const client = identify(req);
    if (client.anonymous && refuseAnonymous) throw new ClientRefusal('a client identity is required (see the server’s clients.identity)', 401, 'unidentified');
    const time = now();
    const { value: state, degraded } = await withStore(undefined, 'read', (store) => store.get(client.id));
    const ticket: ClientTicket = { client, degraded };
    if (state === undefined) return ticket;
    const assessment = detection.assess(state, time);
    // A change by time alone (a throttle that ran out) is logged here, where it is first seen.
    const previous = actions.get(client.id);
    if (previous !== undefined && (previous.action !== assessment.action || previous.tier !== assessment.tier)) logChange(client.id, assessment, previous.action);
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
    if (!tier) throw new ServingError(`the detection policy escalated to tier "${name ?? '(none named)'}", which is not configured in tiers (${[...deps.tiers.keys()].join(', ') || 'none'})`, 500, 'defense_failed');
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
    if (!(hardness instanceof Int8Array) || hardness.length !== rows.rows) throw new ServingError(`clients.hardness must return an Int8Array of ${rows.rows} values (one per row)`, 500, 'defense_failed');
    return hardness;
  };

  const observe = async (ticket: ClientTicket, probs: ProbBatch, inputs: InputRows | undefined, chosen: Defense | null): Promise<DefenseOverride> => {
    const time = now();
    const rows = inputs ? { rows: inputs.rows, cols: inputs.cols, data: inputs.data } : undefined;
    const hardness = inputs && options.hardness ? await hardnessOf(inputs) : undefined;
    const observation = { time, probs, ...(rows && observeInputs ? { inputs: rows } : {}), ...(hardness ? { hardness } : {}) };
    const step = (state: ClientState | undefined) => {
      const { state: next, assessment } = detection.observe(state ?? detection.initialState(time), observation);
      return { state: next, result: assessment };
    };
    const previous = actions.get(ticket.client.id);
    const { value: assessment, degraded } = await withStore(ticket, 'update', (store) => store.update(ticket.client.id, step));
    for (const verdict of assessment.verdicts) metrics.evaluations.inc({ detector: verdict.detector, flagged: String(verdict.flagged) });
    noteAction(ticket.client.id, assessment);
    // `changed` compares with the action at the client's last observation; a change by time alone was
    // already logged at admission (previous then holds the new action and tier), so log it only once.
    if (assessment.changed && (previous?.action !== assessment.action || previous.tier !== assessment.tier)) logChange(ticket.client.id, assessment, previous?.action);
    countAction(assessment);
    const refusal = refusalFor(assessment);
    if (refusal) throw refusal;
    if (assessment.action === 'escalate') return tierDefense(assessment);
    // Without the shared state, the chosen defense may not be skipped: the default one at least.
    if ((degraded || ticket.degraded) && chosen === null) return deps.defense;
    return undefined;
  };

  const suspicious = async (limit: number): Promise<SuspiciousClient[]> => {
    const time = now();
    const { value: stored } = await withStore(undefined, 'list', (store) => store.list(10_000));
    return stored
      .map(({ id, state }) => {
        const a = detection.assess(state, time);
        return { id, action: a.action, tier: a.tier, score: topScore(a), verdicts: a.verdicts };
      })
      .sort((x, y) => SEVERITY[y.action] - SEVERITY[x.action] || y.score - x.score)
      .slice(0, limit);
  };

  return {
    store: storeKind,
    // HODA's hardness is computed from the inputs, so they are read for it too.
    observeInputs: observeInputs || options.hardness !== undefined,
    metrics,
    admit,
    observe,
    suspicious,
    ready: async () => {
      if (shared) await (await shared).ready();
    },
    close: async () => {
      await local.close();
      if (shared) await (await shared.catch(() => undefined))?.close();
    },
  };
}

