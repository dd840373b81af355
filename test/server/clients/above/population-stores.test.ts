import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { resolvePopulationOptions, summarise, type PopulationConfig } from '../../../../src/detection/above/population.js';
import {
  createMemoryFingerprintStore,
  createRedisFingerprintStore,
  ownerTag,
  type FingerprintStore,
} from '../../../../src/server/clients/above/fingerprint-store.js';
import { CountsWindow, createPopulationTracker } from '../../../../src/server/clients/above/population.js';
import { startRedis, type TestRedis, useRedisClient } from '../../helpers/redis-server.js';

const K = 4;
/** A population tracker on Redis at a fixed time, flushed only when the test says. */
const redisTracker = (config: PopulationConfig, redis: Redis, prefix: string, now: number, onError: (error: unknown) => void) =>
  createPopulationTracker(config, { redis, prefix, flushMs: 60_000, onError, onSuccess: () => {}, now: () => now });
/** One request's fingerprints: `rows` rows of K=4 hashes from `base` on. */
const prints = (rows: number, base: number) => Int32Array.from({ length: rows * K }, (_, i) => base + i);

async function fingerprintContract(make: (opts: { maxEntries: number; ttlMs: number }) => FingerprintStore) {
  // Matches another owner's query, never the owner's own.
  let store = make({ maxEntries: 1000, ttlMs: 60_000 });
  assert.deepEqual(Array.from(await store.check('alice', prints(2, 100), 2, 0)), [0, 0]);
  assert.deepEqual(Array.from(await store.check('alice', prints(2, 100), 2, 1)), [0, 0], 'the same owner again: no match');
  const bob = await store.check('bob', Int32Array.of(100, 101, 102, 900, 104, 105, 0, 0), 2, 2);
  assert.deepEqual(Array.from(bob), [3, 2], 'shared hashes with the best query of another owner; 0 is no hash');
  // Per earlier query, not the union: hashes from two different earlier queries do not add up.
  assert.deepEqual(Array.from(await store.check('carol', Int32Array.of(102, 103, 104, 105), 1, 3)), [2]);
  await store.close();

  // Expiry: a hash lives between ttl/2 and ttl after its last write.
  store = make({ maxEntries: 1000, ttlMs: 10_000 });
  await store.check('alice', prints(1, 500), 1, 100_000);
  assert.deepEqual(Array.from(await store.check('bob', prints(1, 500), 1, 104_000)), [4], 'within ttl/2');
  await store.check('dave', prints(1, 700), 1, 107_000);
  assert.deepEqual(Array.from(await store.check('carol', prints(1, 500), 1, 108_000)), [4], 'bob wrote them again at 104 s');
  assert.deepEqual(Array.from(await store.check('erin', prints(1, 700), 1, 131_000)), [0], 'dave’s, after more than ttl');
  await store.close();
}

describe('the fingerprint store', () => {
  const redis = useRedisClient();

  it('memory: matches across owners only, per earlier query, expiring', async () => {
    await fingerprintContract((opts) => createMemoryFingerprintStore({ hashes: K }, opts));
  });

  it('memory: bounded by maxEntries (a full generation rotates early)', async () => {
    const store = createMemoryFingerprintStore({ hashes: K }, { maxEntries: 40, ttlMs: 3_600_000 });
    for (let i = 0; i < 100; i++) await store.check(`owner-${i}`, prints(1, 10_000 + i * K), 1, i);
    assert.ok(store.size() <= 40, `held ${store.size()}`);
    assert.deepEqual(Array.from(await store.check('late', prints(1, 10_000 + 99 * K), 1, 200)), [4], 'the newest stay');
    assert.deepEqual(Array.from(await store.check('late', prints(1, 10_000), 1, 201)), [0], 'the oldest went first');
  });

  it('Redis: the same contract, shared by two replicas, in two keys whatever the traffic', async (t) => {
    let prefix = 0;
    await fingerprintContract((opts) => createRedisFingerprintStore(redis.client, `t${prefix++}:`, { hashes: K }, opts));
    const one = createRedisFingerprintStore(redis.client, 'shared:', { hashes: K }, { maxEntries: 40, ttlMs: 3_600_000 });
    const otherClient = new Redis(redis.server.url);
    t.after(() => otherClient.disconnect());
    const other = createRedisFingerprintStore(otherClient, 'shared:', { hashes: K }, { maxEntries: 40, ttlMs: 3_600_000 });
    await one.check('alice', prints(1, 42), 1, 1000);
    assert.deepEqual(Array.from(await other.check('bob', prints(1, 42), 1, 1001)), [4], 'a replica sees another’s fingerprints');
    for (let i = 0; i < 100; i++) await one.check(`owner-${i}`, prints(1, 20_000 + i * K), 1, 1002 + i);
    const keys = await redis.client.keys('shared:~fp:*');
    assert.equal(keys.length, 1, `keys: ${keys.join(', ')}`);
    assert.ok((await redis.client.hlen(keys[0])) <= 20, 'a generation holds at most maxEntries / 2 hashes');
    assert.ok((await redis.client.pttl(keys[0])) > 3_000_000, 'with a TTL');
    assert.ok(one.size() <= 20);
    assert.notEqual(ownerTag('alice'), ownerTag('bob'));
  });

  it('Redis: a large request goes in chunks of rows (Redis is not held for one long script), with the same answers as in memory', async () => {
    const rows = 150; // three calls of at most 64 rows
    const memory = createMemoryFingerprintStore({ hashes: K }, { maxEntries: 100_000, ttlMs: 3_600_000 });
    const shared = createRedisFingerprintStore(redis.client, 'chunks:', { hashes: K }, { maxEntries: 100_000, ttlMs: 3_600_000 });
    // The rows of each script call (its 6th argument after the three keys).
    const calls: unknown[] = [];
    const spied = redis.client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const script = spied.msdFingerprints;
    spied.msdFingerprints = (...args: unknown[]) => {
      calls.push(args[8]);
      return script.apply(redis.client, args);
    };
    try {
      for (const store of [memory, shared]) {
        const alice = prints(rows, 1);
        // Rows of one request share hashes with one another: never a match (one owner).
        alice.set(alice.subarray(0, K), 70 * K);
        assert.deepEqual(Array.from(await store.check('alice', alice, rows, 0)), new Array(rows).fill(0), store.kind);
        const bob = prints(rows, 1);
        const answer = store.check('bob', bob, rows, 1);
        // The caller reuses its buffer once check returns: the answer must not change.
        bob.fill(0);
        const got = Array.from(await answer);
        const expected = new Array(rows).fill(K);
        expected[70] = 0; // alice's row 70 carried her row 0's hashes, not these
        assert.deepEqual(got, expected, `${store.kind}: every row matches alice's row of the same hashes`);
      }
      assert.deepEqual(calls, [64, 64, 22, 64, 64, 22], 'row counts per script call');
    } finally {
      spied.msdFingerprints = script;
    }
  });

  it('Redis: a generation’s key expires once no lookup reads it, so steady traffic keeps two keys, not three', async () => {
    const ttlMs = 3_600_000;
    const half = ttlMs / 2;
    const store = createRedisFingerprintStore(redis.client, 'expiry:', { hashes: K }, { maxEntries: 1000, ttlMs });
    // A write at the end of generation 10: it is read through generation 11, so its key is needed for
    // one more half at most (not a whole ttl from the write, which would outlive generation 11).
    const late = 11 * half - 1000;
    await store.check('alice', prints(1, 300), 1, late);
    const pttl = await redis.client.pttl('expiry:~fp:10');
    assert.ok(pttl > half - 60_000 && pttl <= half + 1000, `PTTL ${pttl} ms, generation 10 is last read at ${12 * half - late} ms from the write`);
    // The next generation's first write: its key lives until the generation after it ends.
    await store.check('bob', prints(1, 300), 1, 11 * half);
    const next = await redis.client.pttl('expiry:~fp:11');
    assert.ok(next > ttlMs - 60_000 && next <= ttlMs, `PTTL ${next}`);
  });
});

describe('population counts', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.stop());

  it('a window of buckets: sums over the live ones, expired by time', () => {
    const window = new CountsWindow(10_000, 1000, 2);
    window.add([1, 1], 500);
    window.add([2, 0], 1500);
    window.add([3, 0], 1600);
    assert.deepEqual(Array.from(window.sum(1600)), [6, 1]);
    assert.deepEqual(Array.from(window.sum(10_000)), [5, 0], 'the bucket starting at 0 left at 10 s');
    assert.deepEqual(Array.from(window.sum(11_000)), [0, 0]);
    assert.deepEqual(window.liveStarts(11_500), [11_000, 10_000, 9000, 8000, 7000, 6000, 5000, 4000, 3000, 2000]);
  });

  it('judges both views and keeps young traffic apart', () => {
    const config = resolvePopulationOptions({ minQueries: 20, classes: { enabled: false }, alarm: { calmMs: 1000 } });
    const tracker = createPopulationTracker(config);
    const layout = tracker.layoutFor(2)!;
    const confident = summarise(layout, 0.7, { rows: 10, cols: 2, data: new Float32Array(20).map((_, i) => (i % 2 ? 0.05 : 0.95)) });
    const unsure = summarise(layout, 0.7, { rows: 10, cols: 2, data: new Float32Array(20).fill(0.5) });
    tracker.observe(confident, false, 0);
    tracker.observe(confident, false, 1);
    assert.deepEqual(tracker.judge(2), []);
    tracker.observe(unsure, true, 3);
    tracker.observe(unsure, true, 4);
    const changes = tracker.judge(5);
    assert.deepEqual(
      changes.map((c) => [c.view, c.started]),
      [
        ['all', true],
        ['young', true],
      ],
      'all: 20 of 40 unsure; young: 20 of 20',
    );
    assert.equal(tracker.status().young.queries, 20);
    assert.equal(tracker.status().all.queries, 40);
    // The young thief leaves; old clients' confident traffic calms `all` down, `young` empties.
    const ended = [];
    for (let t = 10; t < 700_000; t += 60_000) {
      tracker.observe(confident, false, t);
      ended.push(...tracker.judge(t));
    }
    assert.ok(
      ended.some((c) => c.view === 'all' && !c.started),
      JSON.stringify(ended),
    );
    assert.equal(tracker.alarm('all'), false);
  });

  it('Redis: replicas judge the sum of their counts, in bounded keys', async (t) => {
    const config = resolvePopulationOptions({ minQueries: 30, classes: { enabled: false }, window: { lengthMs: 60_000, bucketMs: 10_000 } });
    const clients = [new Redis(redis.url), new Redis(redis.url)];
    t.after(() => {
      for (const c of clients) c.disconnect();
    });
    let time = 1_000_000;
    const errors: unknown[] = [];
    const sync = (redisClient: Redis) => ({
      redis: redisClient,
      prefix: 'pop:',
      flushMs: 60_000,
      onError: (e: unknown) => errors.push(e),
      onSuccess: () => {},
      now: () => time,
    });
    const [a, b] = clients.map((c) => createPopulationTracker(config, sync(c)));
    const layout = a.layoutFor(2)!;
    b.layoutFor(2);
    const unsure = summarise(layout, 0.7, { rows: 10, cols: 2, data: new Float32Array(20).fill(0.5) });
    // 20 unsure queries at each replica: under minQueries alone, over it together.
    for (const tracker of [a, b]) {
      tracker.observe(unsure, true, time);
      tracker.observe(unsure, true, time);
      assert.deepEqual(tracker.judge(time), []);
    }
    await a.flush(time);
    await b.flush(time);
    await a.flush(time);
    assert.deepEqual(errors, []);
    assert.equal(a.judge(time).length, 2, 'both views alarmed from the shared counts');
    assert.equal(a.status().young.queries, 40);
    assert.equal(b.judge(time).length, 2);
    // Counts observed while not yet flushed are added on top of the shared ones.
    a.observe(unsure, false, time + 1);
    a.judge(time + 1);
    assert.equal(a.status().all.queries, 50);
    await a.flush(time + 1);
    assert.equal(a.status().all.queries, 50, 'sent once, not counted twice');
    // Keys: one per view and bucket, each with a TTL of window + bucket.
    for (let i = 0; i < 30; i++) {
      time += 10_000;
      a.observe(unsure, i % 2 === 0, time);
      await a.flush(time);
    }
    // (Redis expires keys on its own clock, not the simulated one: each key's TTL is the bound.)
    const keys = await clients[0].keys('pop:~pop:*');
    for (const key of keys) assert.ok((await clients[0].pttl(key)) <= 70_000);
    a.judge(time);
    assert.equal(a.status().all.queries, 60, 'the window holds its 6 buckets of 10 queries');
    await a.close();
    await b.close();
  });

  it('Redis: a flush where one bucket’s add fails sends that one again, not the ones Redis took', async (t) => {
    const config = resolvePopulationOptions({ minQueries: 5, classes: { enabled: false }, window: { lengthMs: 60_000, bucketMs: 10_000 } });
    const connection = new Redis(redis.url);
    t.after(() => connection.disconnect());
    const errors: unknown[] = [];
    const time = 2_000_000;
    const tracker = redisTracker(config, connection, 'partial:', time, (e) => errors.push(e));
    const layout = tracker.layoutFor(2)!;
    // The `all` bucket's key holds a string: its add fails (WRONGTYPE), the `young` one's goes through.
    await connection.set(`partial:~pop:2x0:all:${time}`, 'not a hash');
    tracker.observe(summarise(layout, 0.7, { rows: 10, cols: 2, data: new Float32Array(20).fill(0.5) }), true, time);
    await tracker.flush(time);
    assert.equal(errors.length, 1, 'the failure is reported');
    await connection.del(`partial:~pop:2x0:all:${time}`);
    await tracker.flush(time + 1);
    assert.equal(errors.length, 1);
    tracker.judge(time + 1);
    assert.equal(tracker.status().all.queries, 10, 'the failed add was sent again');
    assert.equal(tracker.status().young.queries, 10, 'the young add went through the first time and was not sent twice');
    await tracker.close();
  });

  it('Redis: a bucket’s key expires one bucket after it leaves the window, whenever it was last added to', async (t) => {
    const config = resolvePopulationOptions({ minQueries: 5, classes: { enabled: false }, window: { lengthMs: 60_000, bucketMs: 10_000 } });
    const connection = new Redis(redis.url);
    t.after(() => connection.disconnect());
    const start = 3_000_000;
    const tracker = redisTracker(config, connection, 'expiry:', start + 9_999, (e) => assert.fail(String(e)));
    const layout = tracker.layoutFor(2)!;
    // Counts at the end of their bucket: the bucket is read until start + 60 s, so its key is needed 50 s more
    // (+ one bucket of slack), not a whole window + bucket from this add.
    tracker.observe(summarise(layout, 0.7, { rows: 10, cols: 2, data: new Float32Array(20).fill(0.5) }), false, start + 9_999);
    await tracker.flush(start + 9_999);
    const pttl = await connection.pttl(`expiry:~pop:2x0:all:${start}`);
    assert.ok(pttl > 55_000 && pttl <= 60_001, `PTTL ${pttl} ms`);
    await tracker.close();
  });

  it('Redis down: counts stay local and are sent when it is back', async (t) => {
    const config = resolvePopulationOptions({ minQueries: 5, classes: { enabled: false } });
    const dead = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    dead.on('error', () => {});
    t.after(() => dead.disconnect());
    const errors: unknown[] = [];
    const tracker = redisTracker(config, dead, 'x:', 0, (e) => errors.push(e));
    const layout = tracker.layoutFor(2)!;
    tracker.observe(summarise(layout, 0.7, { rows: 10, cols: 2, data: new Float32Array(20).fill(0.5) }), true, 0);
    await tracker.flush(0);
    assert.equal(errors.length, 1);
    assert.equal(tracker.judge(1).length, 2, 'judged on this process’s own counts meanwhile');
    await tracker.close();
  });
});
