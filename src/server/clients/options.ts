/** Options of client detection (ServingOptions.clients), checked once when the gate is built. */
import type { IncomingMessage } from 'node:http';
import type { FingerprintOptions } from '../../detection/above/fingerprint.js';
import type { PopulationOptions } from '../../detection/above/population.js';
import type { ClientDetection } from '../../detection/types.js';
import { z } from 'zod';
import {
  callable,
  integerAtLeast,
  joinPath,
  keysOf,
  nonEmptyText,
  oneOf,
  optionStyle,
  parseOptions,
  positiveInteger,
  secretText,
  trueOrFalse,
} from '../../validation/index.js';
import { ServingOptionError } from '../errors.js';
import type { CohortOption } from './above/cohort.js';
import type { FingerprintStoreOptions } from './above/fingerprint-store.js';
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

const isDetection = (value: unknown): boolean => {
  const d = value as ClientDetection | null | undefined;
  return !!d && typeof d.initialState === 'function' && typeof d.observe === 'function' && typeof d.assess === 'function';
};

const storeLimit = positiveInteger().optional();

const storeSchema = z.union(
  [
    z.literal('memory'),
    z.strictObject({
      memory: z.strictObject({ maxClients: storeLimit, ttlMs: storeLimit, now: callable<() => number>('a function returning ms').optional() }),
    }),
    z.strictObject({
      redis: z.union([nonEmptyText(), z.looseObject({})], { error: 'a URL such as "redis://127.0.0.1:6379", or ioredis options' }),
      keyPrefix: z.string().optional(),
      ttlMs: storeLimit,
      commandTimeoutMs: storeLimit,
      maxAttempts: storeLimit,
      cachedClients: integerAtLeast(0, 'an integer ≥ 0 (0 turns the cache off)').optional(),
      maxClients: storeLimit,
    } satisfies Record<keyof RedisStoreOptions, z.ZodType>),
  ],
  { error: '"memory", { memory: { maxClients, ttlMs } } or { redis: "redis://127.0.0.1:6379" }' },
);

const offOrOptions = (shape: z.ZodRawShape) =>
  z.union([z.literal(false), z.looseObject(shape)], { error: 'false or an object of options ({} for the defaults)' }).optional();

/** The shape of ClientsOptions; rules between options (tiers, cohorts, inputs) are checked after it. */
const clientsSchema = z.strictObject(
  {
    // Its forms are read by identity.ts, which says what to write.
    identity: z.unknown().optional(),
    trustProxy: z.array(z.string(), { error: 'a list of CIDRs or addresses, e.g. ["10.0.0.0/8"]' }).optional(),
    idSecret: secretText(1, 'a non-empty string (the key hashing client ids)').optional(),
    anonymous: oneOf(['allow', 'refuse'], '"allow" or "refuse"').optional(),
    detection: z.custom<ClientDetection>(isDetection, {
      error: 'a ClientDetection (initialState, observe, assess), e.g. one built by src/detection',
    }),
    store: storeSchema.optional(),
    failMode: oneOf(['local', 'refuse'], '"local" or "refuse"').optional(),
    tierNames: z.record(z.string(), z.string(), { error: 'an object of policy tier → serving tier names' }).optional(),
    escalationTier: z.string().optional(),
    observeInputs: trueOrFalse().optional(),
    hardness: callable<NonNullable<ClientsOptions['hardness']>>(
      'a function (inputs) => Int8Array of hardness per row, e.g. built with checkpointHardness of src/models',
    ).optional(),
    admin: z
      .strictObject({
        token: secretText(16, 'a secret of at least 16 characters (e.g. from an environment variable)'),
        path: z.string({ error: 'a path such as "/admin/clients"' }).startsWith('/', { error: 'a path such as "/admin/clients"' }).optional(),
        limit: positiveInteger().optional(),
      })
      .optional(),
    newClients: z
      .union(
        [
          z.literal(false),
          z.strictObject({ maxPerMinute: positiveInteger().optional(), historyQueries: positiveInteger().optional(), tier: z.string().optional() }),
        ],
        {
          error: 'false or { maxPerMinute, historyQueries, tier }, e.g. { maxPerMinute: 600, historyQueries: 50, tier: "argmax" }',
        },
      )
      .optional(),
    // Its forms are read by cohort.ts, which says what to write.
    cohort: z.unknown().optional(),
    cohortDetection: z.custom<ClientDetection>(isDetection, { error: 'a ClientDetection, e.g. createCohortDetection(options) of src/detection' }).optional(),
    // The population's and the fingerprints' own options are checked by src/detection, which names them.
    population: offOrOptions({ flushMs: integerAtLeast(10, 'an integer ≥ 10 (ms)').optional() }),
    fingerprints: offOrOptions({
      maxEntries: integerAtLeast(2).optional(),
      ttlMs: integerAtLeast(2).optional(),
      maxEntriesPerIdentity: integerAtLeast(1).optional(),
    }),
    probationTier: z.string().optional(),
    clock: callable<() => number>('a function returning ms since the epoch, e.g. Date.now').optional(),
  } satisfies Record<keyof ClientsOptions, z.ZodType>,
  { error: 'an object, e.g. { identity: "header:x-api-key", detection, store: "memory" }' },
);

/** Every option ClientsOptions takes, read from its schema. */
export const CLIENTS_OPTION_NAMES: readonly string[] = keysOf(clientsSchema);

const style = optionStyle(ServingOptionError, 'clients', {
  unknownKeys: (_name, keys, allowed, path) => `unknown ${joinPath('clients', path)} option(s) ${keys.join(', ')}; allowed: ${allowed.join(', ')}`,
});

export function checkClientsOptions(options: ClientsOptions<never>, tierNames: readonly string[]): void {
  parseOptions(clientsSchema, options, style);
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
  if (fresh && fresh.tier !== undefined && !tierNames.includes(fresh.tier))
    throw new ServingOptionError(
      `clients.newClients.tier names tier "${fresh.tier}", which is not in tiers (${tierNames.join(', ') || 'none configured'}); add it to tiers`,
    );
  if (options.trustProxy !== undefined && options.identity !== 'ip' && !(typeof options.cohort === 'string' && options.cohort.startsWith('ip'))) {
    throw new ServingOptionError('clients.trustProxy applies to identity "ip" or cohort "ip" only; remove it or use identity: "ip"');
  }
  if (options.cohortDetection !== undefined && options.cohort === undefined)
    throw new ServingOptionError('clients.cohortDetection needs clients.cohort (which key makes a cohort), e.g. cohort: "ip"');
  if (options.fingerprints && options.observeInputs === false)
    throw new ServingOptionError('clients.fingerprints needs the inputs: remove observeInputs: false, or fingerprints');
  if (options.probationTier !== undefined && !tierNames.includes(options.probationTier)) {
    throw new ServingOptionError(
      `clients.probationTier names tier "${options.probationTier}", which is not in tiers (${tierNames.join(', ') || 'none configured'}); add it to tiers`,
    );
  }
}

export type { CohortOption, IdentityOption };
