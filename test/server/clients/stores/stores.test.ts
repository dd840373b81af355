import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { ClientState } from '../../../../src/detection/types.js';
import { createMemoryStore } from '../../../../src/server/clients/store-memory.js';
import { createRedisStore, type RedisClientStore } from '../../../../src/server/clients/store-redis.js';
import { ClientStoreError } from '../../../../src/server/clients/store.js';
import { startRedis, type TestRedis } from '../../helpers/redis-server.js';

const increment = (state: ClientState | undefined) => {
  const count = ((state?.count as number | undefined) ?? 0) + 1;
  return { state: { count }, result: count };
};

describe('memory client store', () => {
  it('counts N parallel updates of one client exactly', async () => {
    const store = createMemoryStore();
    const results = await Promise.all(Array.from({ length: 200 }, () => store.update('c1', increment)));
    assert.deepEqual((await store.get('c1'))?.count, 200);
    assert.deepEqual(
      [...results].sort((a, b) => a - b),
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
  });

  it('forgets a client ttlMs after its last update', async () => {
    let time = 1_000;
    const store = createMemoryStore({ ttlMs: 500, now: () => time });
    await store.update('c1', increment);
    time += 499;
    assert.equal((await store.get('c1'))?.count, 1);
    await store.update('c1', increment);
    time += 499;
    assert.equal((await store.get('c1'))?.count, 2, 'an update refreshes the expiry');
    time += 1;
    assert.equal(await store.get('c1'), undefined);
  });

  it('keeps at most maxClients, dropping the least recently touched', async () => {
    const store = createMemoryStore({ maxClients: 3 });
    for (const id of ['a', 'b', 'c']) await store.update(id, increment);
    await store.get('a');
    await store.update('d', increment);
    assert.equal(store.size, 3);
    assert.equal(await store.get('b'), undefined);
    assert.ok(await store.get('a'));
    assert.deepEqual((await store.list(10)).map((c) => c.id).sort(), ['a', 'c', 'd']);
  });
});

describe('redis client store (real redis-server)', () => {
  let redis: TestRedis;
  const stores: RedisClientStore[] = [];
  let raw: Redis;
  const open = async (options: Partial<Parameters<typeof createRedisStore>[0]> = {}) => {
    const store = await createRedisStore({ redis: redis.url, keyPrefix: 'test:', ...options });
    stores.push(store);
    await store.ready();
    return store;
  };
  before(async () => {
    redis = await startRedis();
    raw = new Redis(redis.url);
  });
  after(async () => {
    for (const store of stores) await store.close();
    raw?.disconnect();
    await redis?.stop();
  });

  it('counts N parallel updates of one client exactly, from one store and from two connections', async () => {
    const one = await open();
    const two = await open();
    await Promise.all(Array.from({ length: 50 }, () => one.update('c1', increment)));
    assert.equal((await one.get('c1'))?.count, 50);
    // Two connections, as two replicas: the compare-and-set retries on their conflicts.
    await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? one : two).update('c2', increment)));
    assert.equal((await two.get('c2'))?.count, 40);
  });

  it('updates from what it last saw of a client with one round trip, and redoes from Redis when another replica wrote', async () => {
    const one = await open({ keyPrefix: 'cache:' });
    const two = await open({ keyPrefix: 'cache:' });
    const writer = (name: string) => (state: ClientState | undefined) => {
      const writers = [...((state?.writers as string[] | undefined) ?? []), name];
      return { state: { writers }, result: writers.length };
    };
    // Redis's own command counters: reads (hmget) and compare-and-sets (the Lua script) per update.
    const calls = async () => {
      const stats = await raw.info('commandstats');
      const count = (name: string) => Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      return { reads: count('hmget'), writes: count('evalsha') + count('eval') };
    };
    const before = await calls();
    await one.update('c', writer('one'));
    const afterFirst = await calls();
    await one.update('c', writer('one'));
    const afterSecond = await calls();
    assert.deepEqual([afterFirst.reads - before.reads, afterFirst.writes - before.writes], [1, 1], 'the first update reads, then writes');
    assert.deepEqual([afterSecond.reads - afterFirst.reads, afterSecond.writes - afterFirst.writes], [0, 1], 'the second only writes, from what it saw');
    await two.update('c', writer('two'));
    await one.update('c', writer('one'));
    assert.deepEqual((await two.get('c'))?.writers, ['one', 'one', 'two', 'one'], 'the stale cache of `one` was not written over `two`');
  });

  it('never takes a key that expired and was created again elsewhere for the one it cached', async () => {
    // Expiry on Redis's real clock: long enough that the three steps below never outlive it on a busy machine.
    const one = await open({ keyPrefix: 'aba:', ttlMs: 1_000 });
    const two = await open({ keyPrefix: 'aba:', ttlMs: 1_000 });
    const writer = (name: string) => (state: ClientState | undefined) => ({
      state: { writers: [...((state?.writers as string[] | undefined) ?? []), name] },
      result: 0,
    });
    await one.update('c', writer('one'));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // A new history with the same number of writes as the one `one` remembers.
    await two.update('c', writer('two'));
    await one.update('c', writer('one'));
    assert.deepEqual((await one.get('c'))?.writers, ['two', 'one']);
  });

  it('sets an expiry on every key, and the key is gone after it', async () => {
    const store = await open({ ttlMs: 1_000 });
    await store.update('short', increment);
    const ttl = await raw.pttl('test:short');
    assert.ok(ttl > 0 && ttl <= 1_000, `pttl ${ttl}`);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(await store.get('short'), undefined);
  });

  it('lists stored clients by id', async () => {
    const store = await open({ keyPrefix: 'list:' });
    for (const id of ['x', 'y']) await store.update(id, increment);
    assert.deepEqual((await store.list(10)).map((c) => c.id).sort(), ['x', 'y']);
  });

  it('fails fast with a ClientStoreError when Redis cannot be reached', async () => {
    const store = await createRedisStore({ redis: 'redis://127.0.0.1:1', commandTimeoutMs: 200 });
    stores.push(store);
    await assert.rejects(store.ready(), ClientStoreError);
    await assert.rejects(store.get('c1'), ClientStoreError);
    await assert.rejects(store.update('c1', increment), ClientStoreError);
  });
});
