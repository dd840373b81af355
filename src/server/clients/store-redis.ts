/**
 * The Redis client store, shared by every replica. Each client is a hash {v: version, s: JSON state}
 * with a TTL refreshed on every write (PEXPIRE) and on every refused request (keepAlive). An update runs the pure function in JS on the state
 * and writes with a Lua compare-and-set on v; on a conflict (another replica wrote first) it re-reads
 * and retries, a bounded number of times. Updates of one client from this process are queued, so
 * conflicts only arise between replicas.
 *
 * The version and state this process last read or wrote are kept (a bounded cache): an update first
 * tries the compare-and-set on them, one round trip instead of two, and the admission's read (get)
 * refreshes them. A stale entry only costs the failed compare-and-set. Versions carry a random tag,
 * so a key that expired and was created again elsewhere never matches an old version.
 *
 * Bounded: the same script keeps an index of the clients, one sorted set per rank (`<prefix>~index:R`,
 * scored by the time of the last write, Redis's own clock), drops the entries whose keys have expired
 * and, beyond `maxClients`, deletes the clients of the lowest rank written least recently (clean
 * first; refused last). The admin listing reads the index, highest rank first. A paced client's slot
 * (a ladder throttle) is a key of its own, `<prefix>~pace:<id>`, taken with SET NX PX. The script touches
 * keys it cannot declare (the evicted clients): a single Redis (or a proxy that keeps a prefix on one
 * node), not Redis Cluster.
 *
 * Commands time out (commandTimeout), are not queued while disconnected (enableOfflineQueue false)
 * and are retried at most once, so an unreachable Redis fails a request fast (the gate's fail mode
 * decides what then) instead of hanging it. ioredis is imported when the store is created.
 */
import { randomBytes } from 'node:crypto';
import type { Redis, RedisOptions } from 'ioredis';
import type { ClientState } from '../../detection/types.js';
import { ClientStoreError, MAX_RANK, type ClientStore, type StoredClient, type UpdateFn } from './store.js';

export interface RedisStoreOptions {
  /** "redis://host:6379/0" or ioredis options. */
  redis: string | RedisOptions;
  /** Key prefix, default "msd:client:". */
  keyPrefix?: string;
  /** Expiry of a client's key after its last update or refused request, milliseconds. Default 6 hours. */
  ttlMs?: number;
  /** Per-command timeout, milliseconds. Default 500. */
  commandTimeoutMs?: number;
  /** Compare-and-set attempts before an update fails as a store error. Default 20. */
  maxAttempts?: number;
  /** Clients whose last version and state this process keeps to skip a read (see above). Default 1000; 0 turns it off. */
  cachedClients?: number;
  /** Most clients kept in Redis, all replicas together; beyond it the lowest rank, least recently written, is deleted. Default 1000000. */
  maxClients?: number;
}

export const DEFAULT_REDIS_MAX_CLIENTS = 1_000_000;

export interface RedisClientStore extends ClientStore {
  /** Resolves once connected (rejects if the first connection fails); requests before it fail fast. */
  ready(): Promise<void>;
  /** The connection, for the population counts and the fingerprint store (same safety options, same prefix). */
  readonly connection: Redis;
  readonly keyPrefix: string;
}

const RANKS = MAX_RANK + 1;

// KEYS[1] client key, KEYS[2..] the index sorted sets of ranks 0..MAX_RANK.
// ARGV: expected version ("" = absent), new version, state JSON, ttl ms, rank, max clients, client id, key prefix.
const COMPARE_AND_SET = `
local v = redis.call('HGET', KEYS[1], 'v')
if (v or '') ~= ARGV[1] then return 0 end
if redis.replicate_commands then redis.replicate_commands() end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local own = tonumber(ARGV[5]) + 2
local total = 0
for i = 2, #KEYS do
  if i ~= own then redis.call('ZREM', KEYS[i], ARGV[7]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. (now - tonumber(ARGV[4])))
end
redis.call('ZADD', KEYS[own], now, ARGV[7])
for i = 2, #KEYS do total = total + redis.call('ZCARD', KEYS[i]) end
local i = 2
while total > tonumber(ARGV[6]) and i <= #KEYS do
  local oldest = redis.call('ZPOPMIN', KEYS[i])
  if #oldest == 0 then
    i = i + 1
  else
    redis.call('DEL', ARGV[8] .. oldest[1])
    total = total - 1
  end
end
return 1
`;

// KEYS[1] client key, KEYS[2..] the index sorted sets. ARGV: ttl ms, client id. A client that exists
// lives ttl from now and its index entry is scored now (the rank it holds is kept: XX only updates).
const KEEP_ALIVE = `
if redis.replicate_commands then redis.replicate_commands() end
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #KEYS do redis.call('ZADD', KEYS[i], 'XX', now, ARGV[2]) end
return 1
`;

// KEYS[1] the client's slot key. ARGV: ms. 0 when the slot was free and is now taken for ms, else the
// milliseconds until it frees (at least 1).
const RESERVE = `
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'NX') then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then return 1 end
return left
`;

// KEYS[1] the client's slot key. ARGV: ms. The slot stays taken at least ms from now.
const HOLD = `
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
`;

type CasRedis = Redis & {
  msdReserve(key: string, ms: number): Promise<number>;
  msdHold(key: string, ms: number): Promise<number>;
  msdCompareAndSet(key: string, ...rest: (string | number)[]): Promise<number>;
  msdKeepAlive(key: string, ...rest: (string | number)[]): Promise<number>;
};

function wrap(error: unknown): ClientStoreError {
  return error instanceof ClientStoreError ? error : new ClientStoreError(`redis: ${(error as Error)?.message ?? String(error)}`);
}

/** A client's version ("" when absent) and state, as read from or written to Redis. */
interface Versioned {
  version: string;
  state?: ClientState;
}

/** What this process last read or wrote of each client (see above): most recently used last, the oldest dropped when full. */
class VersionCache {
  private readonly entries = new Map<string, Versioned>();

  constructor(private readonly capacity: number) {}

  get(id: string): Versioned | undefined {
    return this.entries.get(id);
  }

  delete(id: string): void {
    this.entries.delete(id);
  }

  remember(id: string, entry: Versioned): void {
    if (this.capacity <= 0) return;
    this.entries.delete(id);
    this.entries.set(id, entry);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value as string);
  }
}

/** Runs the tasks of one key one after another, in order (a failed task does not stop the next). */
function createKeyQueue(): <T>(id: string, task: () => Promise<T>) => Promise<T> {
  const queues = new Map<string, Promise<unknown>>();
  return <T>(id: string, task: () => Promise<T>): Promise<T> => {
    const previous = queues.get(id) ?? Promise.resolve();
    const run = previous.then(task, task);
    const tail = run.catch(() => {});
    queues.set(id, tail);
    void tail.then(() => {
      if (queues.get(id) === tail) queues.delete(id);
    });
    return run;
  };
}

/** The connection and settings the store's operations share. */
interface RedisStoreContext {
  readonly redis: CasRedis;
  readonly prefix: string;
  /** The index sorted sets, one per rank. */
  readonly indexKeys: readonly string[];
  readonly ttlMs: number;
  readonly maxAttempts: number;
  readonly maxClients: number;
  readonly cache: VersionCache;
}

/** A new connection with the safety options (see above) and the compare-and-set script; not yet connecting. */
function openConnection(RedisClass: typeof Redis, options: RedisStoreOptions): CasRedis {
  const safety: RedisOptions = { commandTimeout: options.commandTimeoutMs ?? 500, maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true };
  // ioredis's own keyPrefix is folded into the store's (see storePrefix): off on the connection. The
  // first of ioredis's arguments wins over a later one, so the safety options go before a URL's query.
  // (ioredis takes any order at run time; its types only the URL first.)
  const connection = { ...safety, keyPrefix: '' };
  const OptionsFirst = RedisClass as unknown as new (options: RedisOptions, url: string) => Redis;
  const redis = (
    typeof options.redis === 'string' ? new OptionsFirst(connection, options.redis) : new RedisClass({ ...options.redis, ...connection })
  ) as CasRedis;
  // Connection errors surface on the commands (counted by the gate); the event must have a listener.
  redis.on('error', () => {});
  redis.defineCommand('msdCompareAndSet', { numberOfKeys: 1 + RANKS, lua: COMPARE_AND_SET });
  redis.defineCommand('msdKeepAlive', { numberOfKeys: 1 + RANKS, lua: KEEP_ALIVE });
  redis.defineCommand('msdReserve', { numberOfKeys: 1, lua: RESERVE });
  redis.defineCommand('msdHold', { numberOfKeys: 1, lua: HOLD });
  return redis;
}

async function readClient(ctx: RedisStoreContext, id: string): Promise<Versioned> {
  const [version, text] = await ctx.redis.hmget(ctx.prefix + id, 'v', 's');
  const current = version === null || text === null ? { version: '' } : { version, state: JSON.parse(text) as ClientState };
  ctx.cache.remember(id, current);
  return current;
}

const nextVersion = (version: string): string => `${(parseInt(version, 10) || 0) + 1}.${randomBytes(6).toString('hex')}`;

/** Writes `state` if the client is still at `expected` (1: written; 0: another replica wrote first). */
async function compareAndSet(
  ctx: RedisStoreContext,
  id: string,
  expected: string,
  next: string,
  state: ClientState,
  rank: number | undefined,
): Promise<number> {
  try {
    const r = Math.max(0, Math.min(MAX_RANK, Math.floor(rank ?? 0) || 0));
    return await ctx.redis.msdCompareAndSet(
      ctx.prefix + id,
      ...ctx.indexKeys,
      expected,
      next,
      JSON.stringify(state),
      ctx.ttlMs,
      r,
      ctx.maxClients,
      id,
      ctx.prefix,
    );
  } catch (error) {
    throw wrap(error);
  }
}

/** One update: `fn` on the current state, written by compare-and-set, redone on a conflict (at most maxAttempts times). */
async function updateClient<T>(ctx: RedisStoreContext, id: string, fn: UpdateFn<T>): Promise<T> {
  for (let attempt = 0; attempt < ctx.maxAttempts; attempt++) {
    // First from what this process last saw of the client (no read), then from a fresh read.
    const cached = attempt === 0 ? ctx.cache.get(id) : undefined;
    ctx.cache.delete(id);
    let current: Versioned;
    try {
      current = cached ?? (await readClient(ctx, id));
    } catch (error) {
      throw wrap(error);
    }
    // Outside the store's try: what `fn` throws (a detector rejecting the observation) is no store failure.
    const { state, result, rank } = fn(current.state);
    const next = nextVersion(current.version);
    const written = await compareAndSet(ctx, id, current.version, next, state, rank);
    if (written === 1) {
      ctx.cache.remember(id, { version: next, state });
      return result;
    }
    ctx.cache.delete(id);
    if (cached) continue;
    // Another replica wrote in between: back off a little, at random, and redo from its state.
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 2 * (attempt + 1)));
  }
  throw new ClientStoreError(`redis: client state still contended after ${ctx.maxAttempts} attempts`);
}

/** Up to `limit` clients from the index: highest rank first, the most recently written first within a rank. */
async function listClients(ctx: RedisStoreContext, limit: number): Promise<StoredClient[]> {
  const out: StoredClient[] = [];
  for (let rank = MAX_RANK; rank >= 0 && out.length < limit; rank--) {
    let offset = 0;
    for (;;) {
      // No more states than the listing still needs (each can be tens of kilobytes).
      const ids = await ctx.redis.zrevrange(ctx.indexKeys[rank], offset, offset + Math.min(500, limit - out.length) - 1);
      if (ids.length === 0) break;
      offset += ids.length;
      const pipeline = ctx.redis.pipeline();
      for (const id of ids) pipeline.hget(ctx.prefix + id, 's');
      const texts = (await pipeline.exec()) ?? [];
      ids.forEach((id, i) => {
        const [error, text] = texts[i] ?? [];
        if (out.length < limit && !error && typeof text === 'string') out.push({ id, state: JSON.parse(text) as ClientState });
      });
      if (out.length >= limit) break;
    }
  }
  return out;
}

/**
 * Every key's prefix: ioredis's `keyPrefix` (when the options set one) before the store's own. ioredis
 * would prefix a script's KEYS but not the key names the scripts build from ARGV (an evicted client,
 * the fingerprint and population keys), so the connection goes without it and the store prefixes all.
 */
export function storePrefix(options: Pick<RedisStoreOptions, 'redis' | 'keyPrefix'>): string {
  return ioredisPrefix(options.redis) + (options.keyPrefix ?? 'msd:client:');
}

/** ioredis's keyPrefix: an option of the object, or a query parameter of the URL ("redis://h:6379/0?keyPrefix=tenant:"). */
function ioredisPrefix(redis: RedisStoreOptions['redis']): string {
  if (typeof redis === 'object') return typeof redis.keyPrefix === 'string' ? redis.keyPrefix : '';
  try {
    return new URL(redis).searchParams.get('keyPrefix') ?? '';
  } catch {
    // Not a URL (a socket path): no query, no prefix.
    return '';
  }
}

export async function createRedisStore(options: RedisStoreOptions): Promise<RedisClientStore> {
  const { Redis: RedisClass } = await import('ioredis');
  const prefix = storePrefix(options);
  const ctx: RedisStoreContext = {
    prefix,
    ttlMs: options.ttlMs ?? 6 * 3600_000,
    maxAttempts: options.maxAttempts ?? 20,
    maxClients: options.maxClients ?? DEFAULT_REDIS_MAX_CLIENTS,
    indexKeys: Array.from({ length: RANKS }, (_, rank) => `${prefix}~index:${rank}`),
    redis: openConnection(RedisClass, options),
    cache: new VersionCache(options.cachedClients ?? 1000),
  };
  const { redis } = ctx;
  const connecting = redis.connect().catch((error: unknown) => {
    throw wrap(error);
  });
  connecting.catch(() => {});
  // Updates of one client from this process are queued: conflicts only arise between replicas.
  const serialized = createKeyQueue();

  return {
    kind: 'redis',
    connection: redis,
    keyPrefix: prefix,
    ready: () => connecting,
    get: async (id) => {
      try {
        return (await readClient(ctx, id)).state;
      } catch (error) {
        throw wrap(error);
      }
    },
    update: <T>(id: string, fn: UpdateFn<T>): Promise<T> => serialized(id, () => updateClient(ctx, id, fn)),
    keepAlive: async (id) => {
      try {
        await redis.msdKeepAlive(prefix + id, ...ctx.indexKeys, ctx.ttlMs, id);
      } catch (error) {
        throw wrap(error);
      }
    },
    reserve: async (id, ms) => {
      try {
        return await redis.msdReserve(`${prefix}~pace:${id}`, Math.max(1, Math.round(ms)));
      } catch (error) {
        throw wrap(error);
      }
    },
    hold: async (id, ms) => {
      try {
        await redis.msdHold(`${prefix}~pace:${id}`, Math.max(1, Math.round(ms)));
      } catch (error) {
        throw wrap(error);
      }
    },
    list: async (limit) => {
      try {
        return await listClients(ctx, limit);
      } catch (error) {
        throw wrap(error);
      }
    },
    close: async () => {
      redis.disconnect();
    },
  };
}
