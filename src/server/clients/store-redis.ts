/**
 * The Redis client store, shared by every replica. Each client is a hash {v: version, s: JSON state}
 * with a TTL refreshed on every write (PEXPIRE). An update runs the pure function in JS on the state
 * and writes with a Lua compare-and-set on v; on a conflict (another replica wrote first) it re-reads
 * and retries, a bounded number of times. Updates of one client from this process are queued, so
 * conflicts only arise between replicas.
 *
 * The version and state this process last read or wrote are kept (a bounded cache): an update first
 * tries the compare-and-set on them, one round trip instead of two, and the admission's read (get)
 * refreshes them. A stale entry only costs the failed compare-and-set. Versions carry a random tag,
 * so a key that expired and was created again elsewhere never matches an old version.
 *
 * Commands time out (commandTimeout), are not queued while disconnected (enableOfflineQueue false)
 * and are retried at most once, so an unreachable Redis fails a request fast (the gate's fail mode
 * decides what then) instead of hanging it. ioredis is imported when the store is created.
 */
import { randomBytes } from 'node:crypto';
import type { Redis, RedisOptions } from 'ioredis';
import type { ClientState } from '../../detection/types.js';
import { ClientStoreError, type ClientStore, type StoredClient } from './store.js';

export interface RedisStoreOptions {
  /** "redis://host:6379/0" or ioredis options. */
  redis: string | RedisOptions;
  /** Key prefix, default "msd:client:". */
  keyPrefix?: string;
  /** Expiry of a client's key after its last update, milliseconds. Default 6 hours. */
  ttlMs?: number;
  /** Per-command timeout, milliseconds. Default 500. */
  commandTimeoutMs?: number;
  /** Compare-and-set attempts before an update fails as a store error. Default 20. */
  maxAttempts?: number;
  /** Clients whose last version and state this process keeps to skip a read (see above). Default 1000; 0 turns it off. */
  cachedClients?: number;
}

export interface RedisClientStore extends ClientStore {
  /** Resolves once connected (rejects if the first connection fails); requests before it fail fast. */
  ready(): Promise<void>;
}

// KEYS[1] client key; ARGV: expected version ("" = absent), new version, state JSON, ttl ms.
const COMPARE_AND_SET = `
local v = redis.call('HGET', KEYS[1], 'v')
if (v or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`;

type CasRedis = Redis & { msdCompareAndSet(key: string, expected: string, next: string, state: string, ttl: number): Promise<number> };

function wrap(error: unknown): ClientStoreError {
  return error instanceof ClientStoreError ? error : new ClientStoreError(`redis: ${(error as Error)?.message ?? String(error)}`);
}

export async function createRedisStore(options: RedisStoreOptions): Promise<RedisClientStore> {
  const { Redis: RedisClass } = await import('ioredis');
  const prefix = options.keyPrefix ?? 'msd:client:';
  const ttlMs = options.ttlMs ?? 6 * 3600_000;
  const maxAttempts = options.maxAttempts ?? 20;
  const cachedClients = options.cachedClients ?? 1000;
  const safety: RedisOptions = { commandTimeout: options.commandTimeoutMs ?? 500, maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true };
  const redis = (typeof options.redis === 'string' ? new RedisClass(options.redis, safety) : new RedisClass({ ...options.redis, ...safety })) as CasRedis;
  // Connection errors surface on the commands (counted by the gate); the event must have a listener.
  redis.on('error', () => {});
  redis.defineCommand('msdCompareAndSet', { numberOfKeys: 1, lua: COMPARE_AND_SET });
  const connecting = redis.connect().catch((error: unknown) => {
    throw wrap(error);
  });
  connecting.catch(() => {});

  // Most recently used last; an entry is dropped when its compare-and-set fails or the cache is full.
  const cache = new Map<string, { version: string; state?: ClientState }>();
  const remember = (id: string, entry: { version: string; state?: ClientState }): void => {
    if (cachedClients <= 0) return;
    cache.delete(id);
    cache.set(id, entry);
    if (cache.size > cachedClients) cache.delete(cache.keys().next().value as string);
  };

  const read = async (id: string): Promise<{ version: string; state?: ClientState }> => {
    const [version, text] = await redis.hmget(prefix + id, 'v', 's');
    const current = version === null || text === null ? { version: '' } : { version, state: JSON.parse(text) as ClientState };
    remember(id, current);
    return current;
  };
  const nextVersion = (version: string): string => `${(parseInt(version, 10) || 0) + 1}.${randomBytes(6).toString('hex')}`;

  const queues = new Map<string, Promise<unknown>>();
  const serialized = <T>(id: string, task: () => Promise<T>): Promise<T> => {
    const previous = queues.get(id) ?? Promise.resolve();
    const run = previous.then(task, task);
    const tail = run.catch(() => {});
    queues.set(id, tail);
    void tail.then(() => {
      if (queues.get(id) === tail) queues.delete(id);
    });
    return run;
  };

  const update = <T>(id: string, fn: (state: ClientState | undefined) => { state: ClientState; result: T }): Promise<T> =>
    serialized(id, async () => {
      try {
        for (let attempt = 0; attempt < maxAttempts; attempt++) {
          // First from what this process last saw of the client (no read), then from a fresh read.
          const cached = attempt === 0 ? cache.get(id) : undefined;
          cache.delete(id);
          const current = cached ?? (await read(id));
          const { state, result } = fn(current.state);
          const next = nextVersion(current.version);
          if ((await redis.msdCompareAndSet(prefix + id, current.version, next, JSON.stringify(state), ttlMs)) === 1) {
            remember(id, { version: next, state });
            return result;
          }
          cache.delete(id);
          if (cached) continue;
          // Another replica wrote in between: back off a little, at random, and redo from its state.
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 2 * (attempt + 1)));
        }
      } catch (error) {
        throw wrap(error);
      }
      throw new ClientStoreError(`redis: client state still contended after ${maxAttempts} attempts`);
    });

  return {
    kind: 'redis',
    ready: () => connecting,
    get: async (id) => {
      try {
        return (await read(id)).state;
      } catch (error) {
        throw wrap(error);
      }
    },
    update,
    list: async (limit) => {
      try {
        const out: StoredClient[] = [];
        let cursor = '0';
        do {
          const [nextCursor, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
          cursor = nextCursor;
          const wanted = keys.slice(0, limit - out.length);
          const pipeline = redis.pipeline();
          for (const key of wanted) pipeline.hget(key, 's');
          const texts = (await pipeline.exec()) ?? [];
          wanted.forEach((key, i) => {
            const [error, text] = texts[i] ?? [];
            if (!error && typeof text === 'string') out.push({ id: key.slice(prefix.length), state: JSON.parse(text) as ClientState });
          });
        } while (cursor !== '0' && out.length < limit);
        return out;
      } catch (error) {
        throw wrap(error);
      }
    },
    close: async () => {
      redis.disconnect();
    },
  };
}
