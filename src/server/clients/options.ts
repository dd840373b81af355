/** Options of client detection (ServingOptions.clients), checked once when the gate is built. */
import type { IncomingMessage } from 'node:http';
import type { FingerprintOptions } from '../../detection/fingerprint.js';
import type { PopulationOptions } from '../../detection/population.js';
import type { ClientDetection } from '../../detection/types.js';
import { ServingOptionError } from '../errors.js';
import type { CohortOption } from './cohort.js';
import type { FingerprintStoreOptions } from './fingerprint-store.js';
import type { IdentityOption } from './identity.js';
import type { MemoryStoreOptions } from './store-memory.js';
import type { RedisStoreOptions } from './store-redis.js';

export type StoreOption = 'memory' | { memory: MemoryStoreOptions } | RedisStoreOptions;

/**
 * When the client store fails: "local" keeps serving from this process's own in-memory state, with
 * at least the default defense (never a skipped one); "refuse" answers 503 with Retry-After.
 */
export type StoreFailMode = 'local' | 'refuse';

export interface ClientsOptions<Req = IncomingMessage> {
  /** "header:x-api-key", "jwt:sub" (decoded, not verified: your auth must verify it first), "ip", or (req) => id. */
  identity: string | ((req: Req) => string | null | undefined);
  /** With identity "ip": proxies (CIDRs or addresses) whose X-Forwarded-For is believed. */
  trustProxy?: readonly string[];
  /** Key for hashing client ids (HMAC-SHA256); recommended, so hashed IPs cannot be guessed. */
  idSecret?: string;
  /** Requests without an identity: "allow" (default; they share one "anonymous" history) or "refuse" (401). */
  anonymous?: 'allow' | 'refuse';
  /** The detectors and policy (src/detection). */
  detection: ClientDetection;
  /** "memory" (default), { memory: { maxClients, ttlMs } }, or { redis: url | ioredis options, maxClients, ... }. */
  store?: StoreOption;
  /** Default "local". */
  failMode?: StoreFailMode;
  /** Policy tier name → a ServingOptions.tiers name, when they differ (default: the same name). */
  tierNames?: Readonly<Record<string, string>>;
  /** The tier for an "escalate" that names none. */
  escalationTier?: string;
  /** Pass the request's preprocessed inputs to the detectors (PRADA needs them). Default true. */
  observeInputs?: boolean;
  /**
   * HODA: per input row, its hardness (the first training checkpoint from which every later one gives
   * the final label; -1 when unknown), e.g. from `checkpointHardness(models, …)` of src/models. Without
   * it HODA sees no hardness and stays silent. Needs the inputs, so they are read for it.
   */
  hardness?: (inputs: {
    readonly rows: number;
    readonly cols: number;
    readonly data: Float32Array;
    readonly datatype?: string;
  }) => Promise<Int8Array> | Int8Array;
  /** The admin route listing the most suspicious clients; off unless given. */
  admin?: { token: string; path?: string; limit?: number };
  /**
   * The new-identity rule (on by default where a tier can be found; false turns it off): while more
   * than maxPerMinute (default 600) identities new to the store arrive per minute at this process,
   * clients with fewer than historyQueries (default 50) queries get `tier` (default escalationTier,
   * else the detection policy's first escalation tier).
   */
  newClients?: false | NewClientsOption;
  /**
   * A cohort key beside the identity: "ip" (the /24 or /64 of the client address, "ip/V4/V6" for
   * other prefixes), "jwt:CLAIM" (a tenant or org claim), "header:NAME", "prefix:N" (the first N
   * characters of the raw identity, e.g. an API key's org prefix), or (req, rawId) => key. The
   * detectors then run over each cohort's traffic as over a client's (`cohortDetection`), and while a
   * cohort is flagged its members get the probation tier. Off unless given.
   */
  cohort?: CohortOption;
  /** The cohorts' detection; default: the clients' detectors without the budget, one step ("cohort"). */
  cohortDetection?: ClientDetection;
  /**
   * Population detection: detectors over the recent traffic of every identity and of the young ones
   * (fewer than youngQueries queries); while an alarm holds, young identities (and older ones whose
   * own unsure share is above suspectRate) get the probation tier. Off unless given ({} for defaults).
   */
  population?: false | PopulationServingOptions;
  /**
   * Query fingerprints (Blacklight-style) in one store across identities (and replicas, with Redis):
   * a query matching one of another identity's counts for the client's `fingerprint` detector and
   * the population's `matches` share. Off unless given ({} for defaults). Needs the inputs.
   */
  fingerprints?: false | FingerprintServingOptions;
  /**
   * The tier of the cohort and population probation: it must keep top-1, so honest newcomers keep
   * their answers. Default: escalationTier, else the detection ladder's first tier that keeps top-1,
   * else a configured "mad-argmax" or "argmax".
   */
  probationTier?: string;
  /**
   * The clock of the gate's own bookkeeping (store expiry, the new-identity rate, the population
   * windows, fingerprint generations), ms since the epoch. Default Date.now; a simulation (the
   * detection evaluation) passes its simulated clock.
   */
  clock?: () => number;
}

export interface PopulationServingOptions extends PopulationOptions {
  /** With Redis: how often this process sends its counts and reads everyone's, ms. Default 1000. */
  flushMs?: number;
}

export type FingerprintServingOptions = FingerprintOptions & FingerprintStoreOptions;

export interface NewClientsOption {
  maxPerMinute?: number;
  historyQueries?: number;
  /** A ServingOptions.tiers name. */
  tier?: string;
}

export const CLIENTS_OPTION_NAMES = [
  'identity',
  'trustProxy',
  'idSecret',
  'anonymous',
  'detection',
  'store',
  'failMode',
  'tierNames',
  'escalationTier',
  'observeInputs',
  'hardness',
  'admin',
  'newClients',
  'cohort',
  'cohortDetection',
  'population',
  'fingerprints',
  'probationTier',
  'clock',
];

export function checkClientsOptions(options: ClientsOptions<never>, tierNames: readonly string[]): void {
  if (!options || typeof options !== 'object')
    throw new ServingOptionError('clients must be an object, e.g. { identity: "header:x-api-key", detection, store: "memory" }');
  const unknown = Object.keys(options).filter((key) => !CLIENTS_OPTION_NAMES.includes(key));
  if (unknown.length) throw new ServingOptionError(`unknown clients option(s) ${unknown.join(', ')}; allowed: ${CLIENTS_OPTION_NAMES.join(', ')}`);
  const d = options.detection;
  if (!d || typeof d.initialState !== 'function' || typeof d.observe !== 'function' || typeof d.assess !== 'function') {
    throw new ServingOptionError('clients.detection must be a ClientDetection (initialState, observe, assess), e.g. one built by src/detection');
  }
  if (options.anonymous !== undefined && options.anonymous !== 'allow' && options.anonymous !== 'refuse')
    throw new ServingOptionError(`clients.anonymous must be "allow" or "refuse", got ${JSON.stringify(options.anonymous)}`);
  if (options.failMode !== undefined && options.failMode !== 'local' && options.failMode !== 'refuse')
    throw new ServingOptionError(`clients.failMode must be "local" or "refuse", got ${JSON.stringify(options.failMode)}`);
  const store = options.store;
  if (store !== undefined && store !== 'memory' && !(typeof store === 'object' && store !== null && ('memory' in store || 'redis' in store))) {
    throw new ServingOptionError('clients.store must be "memory", { memory: { maxClients, ttlMs } } or { redis: "redis://127.0.0.1:6379" }');
  }
  const limits: [string, unknown][] =
    typeof store === 'object' && 'memory' in store
      ? [
          ['store.memory.maxClients', store.memory.maxClients],
          ['store.memory.ttlMs', store.memory.ttlMs],
        ]
      : typeof store === 'object' && 'redis' in store
        ? [
            ['store.ttlMs', store.ttlMs],
            ['store.commandTimeoutMs', store.commandTimeoutMs],
            ['store.maxAttempts', store.maxAttempts],
            ['store.maxClients', store.maxClients],
          ]
        : [];
  for (const [name, value] of limits) {
    if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < 1))
      throw new ServingOptionError(`clients.${name} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  const cached = typeof store === 'object' && 'redis' in store ? store.cachedClients : undefined;
  if (cached !== undefined && (typeof cached !== 'number' || !Number.isInteger(cached) || cached < 0))
    throw new ServingOptionError(`clients.store.cachedClients must be an integer ≥ 0 (0 turns the cache off), got ${JSON.stringify(cached)}`);
  for (const [policyTier, servingTier] of [
    ...Object.entries(options.tierNames ?? {}),
    ...(options.escalationTier ? [['escalationTier', options.escalationTier]] : []),
  ]) {
    if (!tierNames.includes(servingTier))
      throw new ServingOptionError(
        `clients: ${policyTier} names tier "${servingTier}", which is not in tiers (${tierNames.join(', ') || 'none configured'}); add it to tiers`,
      );
  }
  const fresh = options.newClients;
  if (fresh !== undefined && fresh !== false) {
    if (typeof fresh !== 'object' || fresh === null)
      throw new ServingOptionError(
        'clients.newClients must be false or { maxPerMinute, historyQueries, tier }, e.g. { maxPerMinute: 600, historyQueries: 50, tier: "argmax" }',
      );
    const extra = Object.keys(fresh).filter((key) => !['maxPerMinute', 'historyQueries', 'tier'].includes(key));
    if (extra.length) throw new ServingOptionError(`unknown clients.newClients option(s) ${extra.join(', ')}; allowed: maxPerMinute, historyQueries, tier`);
    for (const key of ['maxPerMinute', 'historyQueries'] as const) {
      const value = fresh[key];
      if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < 1))
        throw new ServingOptionError(`clients.newClients.${key} must be a positive integer, got ${JSON.stringify(value)}`);
    }
    if (fresh.tier !== undefined && !tierNames.includes(fresh.tier))
      throw new ServingOptionError(
        `clients.newClients.tier names tier "${fresh.tier}", which is not in tiers (${tierNames.join(', ') || 'none configured'}); add it to tiers`,
      );
  }
  if (options.trustProxy !== undefined && options.identity !== 'ip' && !(typeof options.cohort === 'string' && options.cohort.startsWith('ip'))) {
    throw new ServingOptionError('clients.trustProxy applies to identity "ip" or cohort "ip" only; remove it or use identity: "ip"');
  }
  const cd = options.cohortDetection;
  if (cd !== undefined && (!cd || typeof cd.initialState !== 'function' || typeof cd.observe !== 'function' || typeof cd.assess !== 'function')) {
    throw new ServingOptionError('clients.cohortDetection must be a ClientDetection, e.g. createCohortDetection(options) of src/detection');
  }
  if (cd !== undefined && options.cohort === undefined)
    throw new ServingOptionError('clients.cohortDetection needs clients.cohort (which key makes a cohort), e.g. cohort: "ip"');
  for (const name of ['population', 'fingerprints'] as const) {
    const value = options[name];
    if (value !== undefined && value !== false && (typeof value !== 'object' || value === null || Array.isArray(value)))
      throw new ServingOptionError(`clients.${name} must be false or an object of options ({} for the defaults)`);
  }
  const population = options.population;
  if (
    population &&
    population.flushMs !== undefined &&
    (typeof population.flushMs !== 'number' || !Number.isInteger(population.flushMs) || population.flushMs < 10)
  ) {
    throw new ServingOptionError(`clients.population.flushMs must be an integer ≥ 10 (ms), got ${JSON.stringify(population.flushMs)}`);
  }
  const fingerprints = options.fingerprints;
  if (fingerprints) {
    for (const key of ['maxEntries', 'ttlMs'] as const) {
      const value = fingerprints[key];
      if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < 2))
        throw new ServingOptionError(`clients.fingerprints.${key} must be an integer ≥ 2, got ${JSON.stringify(value)}`);
    }
    if (options.observeInputs === false) throw new ServingOptionError('clients.fingerprints needs the inputs: remove observeInputs: false, or fingerprints');
  }
  if (options.probationTier !== undefined && !tierNames.includes(options.probationTier)) {
    throw new ServingOptionError(
      `clients.probationTier names tier "${options.probationTier}", which is not in tiers (${tierNames.join(', ') || 'none configured'}); add it to tiers`,
    );
  }
  if (options.clock !== undefined && typeof options.clock !== 'function')
    throw new ServingOptionError('clients.clock must be a function returning ms since the epoch, e.g. Date.now');
  if (options.hardness !== undefined && typeof options.hardness !== 'function')
    throw new ServingOptionError(
      'clients.hardness must be a function (inputs) => Int8Array of hardness per row, e.g. built with checkpointHardness of src/models',
    );
  if (options.admin !== undefined) {
    const { token, path } = options.admin;
    if (typeof token !== 'string' || token.length < 16)
      throw new ServingOptionError('clients.admin.token must be a secret of at least 16 characters (e.g. from an environment variable)');
    if (path !== undefined && (typeof path !== 'string' || !path.startsWith('/')))
      throw new ServingOptionError('clients.admin.path must be a path such as "/admin/clients"');
  }
}

export type { CohortOption, IdentityOption };
