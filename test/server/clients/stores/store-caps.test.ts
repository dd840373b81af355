import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { ClientState } from '../../../../src/detection/types.js';
import { createMemoryStore } from '../../../../src/server/clients/store-memory.js';
import { createRedisStore, type RedisClientStore } from '../../../../src/server/clients/store-redis.js';
import type { ClientStore } from '../../../../src/server/clients/store.js';
import { startRedis, type TestRedis } from '../../helpers/redis-server.js';

/** Ranks as the gate writes them: 0 clean, 1 escalated, 2 throttled, 3 refused. */
const write = (store: ClientStore, id: string, rank: number) =>
  store.update(id, (state: ClientState | undefined) => ({ state: { id, n: ((state?.n as number) ?? 0) + 1 }, result: undefined, rank }));

/**
 * 3 flagged clients (refused, throttled, escalated), then a flood of 20 fresh clean identities into a
 * store capped at 5: the flagged states stay, the oldest clean ones go first.
 */
async function floodCappedStore(store: ClientStore, pause: () => Promise<void>): Promise<void> {
  await write(store, 'refused', 3);
  await write(store, 'throttled', 2);
  await write(store, 'escalated', 1);
  for (let i = 0; i < 20; i++) {
    await pause();
    await write(store, `sybil-${i}`, 0);
  }
  for (const id of ['refused', 'throttled', 'escalated']) assert.ok(await store.get(id), `${id} was evicted by fresh identities`);
  assert.ok(await store.get('sybil-19'), 'the newest clean client is kept');
  assert.equal(await store.get('sybil-0'), undefined, 'the oldest clean client went first');
}

describe('client store caps: clean clients go before flagged ones', () => {
  it('memory store', async () => {
    const store = createMemoryStore({ maxClients: 5 });
    await floodCappedStore(store, async () => {});
    assert.equal(store.size, 5);
    // The admin listing sees the flagged clients first.
    assert.deepEqual(
      (await store.list(3)).map((c) => c.id),
      ['refused', 'throttled', 'escalated'],
    );
    // With only flagged clients left to evict, the lowest rank (escalated) goes before the refused.
    const full = createMemoryStore({ maxClients: 2 });
    await write(full, 'refused', 3);
    await write(full, 'escalated', 1);
    await write(full, 'throttled', 2);
    assert.equal(await full.get('escalated'), undefined);
    assert.ok(await full.get('refused'));
  });

  describe('redis store (real redis-server)', () => {
    let redis: TestRedis;
    let raw: Redis;
    const stores: RedisClientStore[] = [];
    const open = async (options: Partial<Parameters<typeof createRedisStore>[0]>) => {
      const store = await createRedisStore({ redis: redis.url, ...options });
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

    it('keeps at most maxClients keys, all replicas together, evicting clean clients first', async () => {
      const one = await open({ keyPrefix: 'cap:', maxClients: 5 });
      const two = await open({ keyPrefix: 'cap:', maxClients: 5 });
      // Two replicas writing alternately; a millisecond apart so that "oldest" is well defined.
      let turn = 0;
      const alternating: ClientStore = { ...one, get: (id) => (turn++ % 2 ? two : one).get(id), update: (id, fn) => (turn++ % 2 ? two : one).update(id, fn) };
      await floodCappedStore(alternating, () => new Promise((resolve) => setTimeout(resolve, 2)));
      const keys = (await raw.keys('cap:*')).filter((k) => !k.includes('~'));
      assert.equal(keys.length, 5, keys.join(', '));
      assert.deepEqual(
        (await one.list(3)).map((c) => c.id),
        ['refused', 'throttled', 'escalated'],
      );
    });

    it("keeps the cap with ioredis's own keyPrefix: every key under it, the evicted ones deleted", async () => {
      const url = new URL(redis.url);
      const store = await open({ redis: { host: url.hostname, port: Number(url.port), keyPrefix: 'tenant:' }, maxClients: 5 });
      assert.equal(store.keyPrefix, 'tenant:msd:client:');
      for (let i = 0; i < 30; i++) await write(store, `flood-${i}`, 0);
      const keys = (await raw.keys('tenant:msd:client:*')).filter((k) => !k.includes('~'));
      assert.equal(keys.length, 5, keys.join(', '));
      // Nothing written outside the prefix (the evictions used to delete unprefixed names).
      assert.deepEqual(await raw.keys('msd:*'), []);
      assert.ok(await store.get('flood-29'));
    });

    it('keeps the cap with a keyPrefix in the URL, and the safety options win over the URL', async () => {
      const store = await open({ redis: `${redis.url}/0?keyPrefix=url-tenant:&enableOfflineQueue=true`, maxClients: 5 });
      assert.equal(store.keyPrefix, 'url-tenant:msd:client:');
      assert.equal(store.connection.options.keyPrefix, '');
      assert.equal(store.connection.options.enableOfflineQueue, false);
      for (let i = 0; i < 30; i++) await write(store, `url-flood-${i}`, 0);
      const keys = (await raw.keys('url-tenant:msd:client:*')).filter((k) => !k.includes('~'));
      assert.equal(keys.length, 5, keys.join(', '));
      assert.deepEqual(await raw.keys('msd:*'), []);
    });

    it('drops index entries whose keys expired, so they never count against the cap', async () => {
      const store = await open({ keyPrefix: 'exp:', maxClients: 3, ttlMs: 1_000 });
      await write(store, 'refused', 3);
      await write(store, 'old-1', 0);
      await write(store, 'old-2', 0);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      for (const id of ['a', 'b', 'c']) await write(store, id, 0);
      const indexed = (await Promise.all([0, 1, 2, 3].map((r) => raw.zcard(`exp:~index:${r}`)))).reduce((a, b) => a + b, 0);
      assert.equal(indexed, 3);
      for (const id of ['a', 'b', 'c']) assert.ok(await store.get(id), `${id} evicted although the others had expired`);
    });
  });
});
