/**
 * The fingerprint store under a flood of distinct rows from one key: a per-identity quota of new
 * hashes per generation, past which only a sample of the key's rows is written, keeps the flood from
 * evicting (memory) or blocking (Redis) everyone else's fingerprints without letting a key opt out of
 * being recorded; a full generation is reported once.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseDefense } from '../../../../src/defenses/index.js';
import { createClientDetection } from '../../../../src/detection/index.js';
import {
  createMemoryFingerprintStore,
  createRedisFingerprintStore,
  type FingerprintStore,
  type FingerprintStoreEvents,
  type FingerprintStoreOptions,
} from '../../../../src/server/clients/above/fingerprint-store.js';
import { createClientGate } from '../../../../src/server/clients/gate.js';
import { createServingMetrics } from '../../../../src/server/metrics.js';
import { rng } from '../../../detection/synthetic.js';
import { aboveGate } from '../../helpers/above-gate.js';
import { useRedisClient } from '../../helpers/redis-server.js';

const K = 4;
/** `rows` rows of K hashes, from `base` on (distinct for distinct bases far enough apart). */
const prints = (rows: number, base: number) => Int32Array.from({ length: rows * K }, (_, i) => base + i);
/** Row `r` of prints(_, base). */
const row = (base: number, r: number) => prints(1, base + r * K);

type Make = (options: FingerprintStoreOptions, events?: FingerprintStoreEvents, random?: () => number) => FingerprintStore;

/** A random source that never samples a row past the quota (draw × rows offered ≥ quotaRows always): the hard stop. */
const neverPastQuota = () => 1 - 2 ** -53;

const BOB = 1000;
const MALLORY = 100_000;
const DAVE = 500_000;

async function floodContract(make: Make) {
  // A generation holds 200 hashes; one identity may add 20 new ones to it.
  const store = make({ maxEntries: 400, ttlMs: 3_600_000, maxEntriesPerIdentity: 20 }, {}, neverPastQuota);
  const t = 1_000_000;
  await store.check('bob', prints(1, BOB), 1, t);
  // Mallory floods 100 distinct rows (400 hashes, twice a generation's cap), in several requests.
  for (let i = 0; i < 4; i++) await store.check('mallory', prints(25, MALLORY + i * 100), 25, t + 1 + i);
  // Dave writes after the flood.
  await store.check('dave', prints(1, DAVE), 1, t + 10);
  assert.deepEqual(Array.from(await store.check('carol', row(BOB, 0), 1, t + 11)), [K], `${store.kind}: bob's row, written before the flood, still matches`);
  assert.deepEqual(Array.from(await store.check('carol', row(DAVE, 0), 1, t + 12)), [K], `${store.kind}: dave's row, written after the flood, is recorded`);
  // Mallory's first 20 hashes (5 rows) were written; the rest were looked up only (none sampled, by the source).
  assert.deepEqual(Array.from(await store.check('erin', prints(6, MALLORY), 6, t + 13)), [K, K, K, K, K, 0], `${store.kind}: mallory's quota`);
  // Past her quota, her rows are still looked up: a match of another's row counts.
  assert.deepEqual(Array.from(await store.check('mallory', row(DAVE, 0), 1, t + 14)), [K], `${store.kind}: looked up past the quota`);
  await store.close();
}

async function quotaPerGeneration(make: Make) {
  const ttlMs = 10_000; // generations of 5 s
  const store = make({ maxEntries: 1000, ttlMs, maxEntriesPerIdentity: 8 }, {}, neverPastQuota);
  const t = 2_000_000_000; // a generation boundary (a multiple of 5 s)
  await store.check('mallory', prints(2, MALLORY), 2, t); // her 8 hashes
  await store.check('mallory', prints(1, MALLORY + 100), 1, t + 100);
  assert.deepEqual(Array.from(await store.check('carol', prints(1, MALLORY + 100), 1, t + 200)), [0], `${store.kind}: past the quota: not recorded`);
  await store.check('mallory', prints(1, MALLORY + 200), 1, t + 5000);
  assert.deepEqual(Array.from(await store.check('carol', prints(1, MALLORY + 200), 1, t + 5100)), [K], `${store.kind}: a new generation, a new quota`);
  // Re-sending a row the generation holds takes no room, so no quota: 4 of her 8 are left after five re-sends.
  for (let i = 0; i < 5; i++) await store.check('mallory', prints(1, MALLORY + 200), 1, t + 5200 + i);
  await store.check('mallory', prints(1, MALLORY + 300), 1, t + 5300);
  assert.deepEqual(Array.from(await store.check('carol', prints(1, MALLORY + 300), 1, t + 5400)), [K], `${store.kind}: rewrites are free`);
  await store.close();
}

/** `rows` distinct rows of `k` hashes from `base` on. */
const wide = (rows: number, k: number, base: number) => Int32Array.from({ length: rows * k }, (_, i) => base + i);

async function noOptingOut(make: (k: number, random: () => number) => FingerprintStore) {
  // Default options, 20 hashes a row: a quota of 2500 hashes, 125 rows. Thief A uses it up with any
  // 125 rows; its next query Q must still be recordable, or thief B re-sending Q is never matched.
  const k = 20;
  const store = make(k, () => 0.5);
  await store.check('thief-a', wide(125, k, 1), 125, 1000);
  const q = wide(1, k, 10_000_000);
  await store.check('thief-a', q, 1, 1001);
  assert.deepEqual(Array.from(await store.check('thief-b', q, 1, 1002)), [k], `${store.kind}: a query past the quota can be recorded`);
  await store.close();
}

async function samplingRate(make: Make) {
  // A quota of 200 hashes: 50 rows of K. Mallory offers ten times that, 500 distinct rows.
  const store = make({ maxEntries: 10_000, ttlMs: 3_600_000, maxEntriesPerIdentity: 200 }, {}, rng(11));
  for (let i = 0; i < 10; i++) await store.check('mallory', prints(50, MALLORY + i * 50 * K), 50, 1000 + i);
  const seen = Array.from(await store.check('carol', prints(500, MALLORY), 500, 2000));
  assert.ok(
    seen.every((c) => c === 0 || c === K),
    `${store.kind}: whole rows only`,
  );
  const recorded = seen.filter((c) => c === K).length;
  // Expected 50 · (1 + H(500) − H(50)) ≈ 165 (about 50 · (1 + ln 10)); "none past the quota" gives 50, "all" 500.
  assert.ok(recorded >= 130 && recorded <= 200, `${store.kind}: ${recorded} rows recorded of 500`);
  assert.deepEqual(seen.slice(0, 50), new Array(50).fill(K), `${store.kind}: the quota's rows are all recorded`);
  await store.close();
}

async function wholeRows(make: Make) {
  // A quota of 10 hashes with K = 4: two rows fit, the third would cross it (8 + 4 > 10).
  for (const [random, expected] of [
    [neverPastQuota, [K, K, 0, 0, 0, 0]],
    [() => 0, [K, K, K, K, K, K]],
  ] as const) {
    const store = make({ maxEntries: 1000, ttlMs: 3_600_000, maxEntriesPerIdentity: 10 }, {}, random);
    await store.check('mallory', prints(6, MALLORY), 6, 1000);
    assert.deepEqual(Array.from(await store.check('carol', prints(6, MALLORY), 6, 1001)), expected, `${store.kind}: all of a row's hashes or none`);
    await store.close();
  }
}

async function floodBound(make: Make) {
  // A generation of 10 000 hashes, a quota of 100 (25 rows of K); Mallory offers 100 times that, 2500 rows.
  const store = make({ maxEntries: 20_000, ttlMs: 3_600_000, maxEntriesPerIdentity: 100 }, {}, rng(5));
  const t = 1_000_000;
  await store.check('bob', prints(1, BOB), 1, t);
  for (let i = 0; i < 25; i++) await store.check('mallory', prints(100, MALLORY + i * 100 * K), 100, t + 1 + i);
  await store.check('dave', prints(1, DAVE), 1, t + 100);
  const held = store.size() - 2 * K;
  // About 25 · (1 + ln 100) ≈ 140 rows, 560 hashes: more than her quota, a small share of the generation.
  assert.ok(held > 100 && held <= 1000, `${store.kind}: mallory holds ${held} hashes of 10 000`);
  assert.deepEqual(Array.from(await store.check('carol', row(BOB, 0), 1, t + 101)), [K], `${store.kind}: bob's row still matches`);
  assert.deepEqual(Array.from(await store.check('carol', row(DAVE, 0), 1, t + 102)), [K], `${store.kind}: dave's row is recorded`);
  await store.close();
}

describe('the fingerprint store under a flood from one identity', () => {
  const redis = useRedisClient();
  let prefix = 0;
  const memory: Make = (options, events, random) => createMemoryFingerprintStore({ hashes: K }, options, events, random);
  const shared: Make = (options, events, random) => createRedisFingerprintStore(redis.client, `flood${prefix++}:`, { hashes: K }, options, events, random);

  it('memory: one identity’s flood of distinct rows evicts nobody’s fingerprints', () => floodContract(memory));
  it('Redis: one identity’s flood of distinct rows blocks nobody’s writes', () => floodContract(shared));
  it('memory: the quota is per generation', () => quotaPerGeneration(memory));
  it('Redis: the quota is per generation', () => quotaPerGeneration(shared));
  it('memory: a key past its quota cannot opt out of being recorded', () =>
    noOptingOut((k, random) => createMemoryFingerprintStore({ hashes: k }, {}, {}, random)));
  it('Redis: a key past its quota cannot opt out of being recorded', () =>
    noOptingOut((k, random) => createRedisFingerprintStore(redis.client, `optout${prefix++}:`, { hashes: k }, {}, {}, random)));
  it('memory: past the quota a sample of the rows is recorded, growing logarithmically', () => samplingRate(memory));
  it('Redis: past the quota a sample of the rows is recorded, growing logarithmically', () => samplingRate(shared));
  it('memory: rows are recorded whole at the quota’s edge', () => wholeRows(memory));
  it('Redis: rows are recorded whole at the quota’s edge', () => wholeRows(shared));
  it('memory: a flood of 100 quotas fills a small share of the generation', () => floodBound(memory));
  it('Redis: a flood of 100 quotas fills a small share of the generation', () => floodBound(shared));

  it('the default quota: a hundredth of a generation, at least 1000 hashes, at most the generation', async () => {
    // Default maxEntries (500 000): a generation of 250 000 hashes, 2500 per identity (625 rows of 4).
    let store = createMemoryFingerprintStore({ hashes: K }, {}, {}, neverPastQuota);
    await store.check('mallory', prints(1000, MALLORY), 1000, 0);
    assert.deepEqual(Array.from(await store.check('carol', prints(626, MALLORY), 626, 1)).slice(623), [K, K, 0]);
    // A generation of 5000: at least 1000 hashes (250 rows).
    store = createMemoryFingerprintStore({ hashes: K }, { maxEntries: 10_000 }, {}, neverPastQuota);
    await store.check('mallory', prints(1000, MALLORY), 1000, 0);
    assert.deepEqual(Array.from(await store.check('carol', prints(251, MALLORY), 251, 1)).slice(249), [K, 0]);
    // A generation of 200: never more than the generation.
    store = createMemoryFingerprintStore({ hashes: K }, { maxEntries: 400, maxEntriesPerIdentity: 10_000 });
    await store.check('mallory', prints(50, MALLORY), 50, 0);
    assert.deepEqual(Array.from(await store.check('carol', prints(50, MALLORY), 50, 1)), new Array(50).fill(K));
  });

  it('memory and Redis record the same rows for the same draws (fast-check over request sequences)', async () => {
    const request = fc.record({
      owner: fc.constantFrom('alice', 'bob', 'mallory'),
      // Hashes from a small pool, so rows overlap within and across requests; 0 is an empty slot.
      hashes: fc.array(fc.integer({ min: 0, max: 40 }), { minLength: K, maxLength: 6 * K }),
    });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 25 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), async (requests, seed) => {
        // A quota of 2 rows, a generation large enough never to fill (filling differs by design).
        const options = { maxEntries: 100_000, ttlMs: 3_600_000, maxEntriesPerIdentity: 2 * K };
        const memory = createMemoryFingerprintStore({ hashes: K }, options, {}, rng(seed));
        const shared = createRedisFingerprintStore(redis.client, `same${run++}:`, { hashes: K }, options, {}, rng(seed));
        for (const [i, { owner, hashes }] of requests.entries()) {
          const rows = Math.floor(hashes.length / K);
          // A row's hashes are distinct and sorted, as fingerprintRows gives them.
          const prints = Int32Array.from({ length: rows * K }, (_, j) => hashes[j]);
          for (let r = 0; r < rows; r++) {
            const distinct = [...new Set(prints.subarray(r * K, (r + 1) * K))].sort((a, b) => a - b);
            prints.set([...distinct, ...new Array(K - distinct.length).fill(0)], r * K);
          }
          const a = Array.from(await memory.check(owner, prints, rows, i));
          const b = Array.from(await shared.check(owner, prints, rows, i));
          assert.deepEqual(b, a, `request ${i} (${owner}, ${rows} rows)`);
          assert.equal(shared.size(), memory.size(), `hashes held after request ${i}`);
        }
      }),
      { numRuns: 40 },
    );
  });

  it('the default draws come from the operating system, not Math.random (whose state its outputs give away)', async (t) => {
    t.mock.method(Math, 'random', () => {
      throw new Error('Math.random drawn');
    });
    for (const store of [
      createMemoryFingerprintStore({ hashes: K }, { maxEntries: 1000, maxEntriesPerIdentity: 8 }),
      createRedisFingerprintStore(redis.client, `default-random${prefix++}:`, { hashes: K }, { maxEntries: 1000, maxEntriesPerIdentity: 8 }),
    ]) {
      // 100 rows of 4 hashes against a quota of 2 rows: 98 draws, some rows recorded, not all.
      await store.check('mallory', prints(100, MALLORY), 100, 0);
      const matched = Array.from(await store.check('carol', prints(100, MALLORY), 100, 1)).filter((c) => c === K).length;
      assert.ok(matched > 2 && matched < 100, `${store.kind}: ${matched} of 100 rows recorded`);
      await store.close();
    }
  });

  it('Redis: the quota counts live in one key per generation, expiring just after that generation ends', async () => {
    const ttlMs = 3_600_000;
    const half = ttlMs / 2;
    const store = createRedisFingerprintStore(redis.client, 'quota:', { hashes: K }, { maxEntries: 1000, ttlMs, maxEntriesPerIdentity: 100 });
    for (let g = 10; g < 13; g++) {
      await store.check('alice', prints(2, 100 * g), 2, g * half + 1000);
      await store.check('bob', prints(1, 100 * g + 50), 1, g * half + 2000);
    }
    const keys = (await redis.client.keys('quota:~fpn:*')).sort();
    assert.deepEqual(keys, ['quota:~fpn:10', 'quota:~fpn:11', 'quota:~fpn:12'], 'one key per generation (Redis expires them on its own clock)');
    const counts = await redis.client.hgetall('quota:~fpn:12');
    assert.deepEqual(Object.values(counts).sort(), ['4:1', '8:2'], 'new hashes and rows offered, per identity');
    // The last write is 2 s into generation 12: its counts are not read after it ends (kept 10 s more,
    // for a request whose script calls straddle the end), its hashes one half later.
    const [fpn, fp] = [await redis.client.pttl('quota:~fpn:12'), await redis.client.pttl('quota:~fp:12')];
    const grace = 10_000;
    assert.ok(fpn > half - 2000 + grace - 60_000 && fpn <= half - 2000 + grace, `PTTL ${fpn}, the generation ends in ${half - 2000} ms`);
    assert.ok(Math.abs(fp - fpn - (half - grace)) < 5000, `PTTL ${fp} of the hashes, one half after the generation's end`);
  });

  for (const kind of ['memory', 'redis'] as const) {
    it(`${kind}: a full generation is reported once`, async () => {
      const reports: unknown[] = [];
      const options = { maxEntries: 40, ttlMs: 3_600_000 };
      const events: FingerprintStoreEvents = { generationFull: (event) => reports.push(event) };
      const store = kind === 'memory' ? memory(options, events) : shared(options, events);
      // 100 identities of one row each: 400 hashes, a generation holds 20.
      for (let i = 0; i < 100; i++) await store.check(`owner-${i}`, prints(1, 10_000 + i * K), 1, 5_000_000 + i);
      assert.equal(reports.length, 1, JSON.stringify(reports));
      assert.deepEqual(reports[0], { store: kind, entries: 20 });
      await store.close();
    });
  }
});

describe('a full fingerprint generation in the gate', () => {
  it('is logged once (warn) and counted, without client labels', async () => {
    const tiers = new Map([['argmax', parseDefense('argmax')]]);
    // A generation of 20 hashes: one 20-hash fingerprint fills it.
    const { gate, ask, logs, metrics } = aboveGate({ fingerprints: { maxEntries: 40 } }, { tiers });
    const random = rng(7);
    const image = () => ({ rows: 1, cols: 784, data: Float32Array.from({ length: 784 }, () => (random() < 0.3 ? 0.9 : 0)) });
    for (let i = 0; i < 4; i++) await ask(`key-${i}`, undefined, {}, image());
    const full = logs.lines.filter((l) => l.msg?.toString().startsWith('fingerprint store generation full'));
    assert.equal(full.length, 1, JSON.stringify(logs.lines.map((l) => l.msg)));
    assert.equal(full[0].level, 40);
    assert.doesNotMatch(JSON.stringify(full[0]), /key-\d/);
    const text = await metrics.registry.getSingleMetricAsString('msd_fingerprint_generations_full_total');
    assert.match(text, /^msd_fingerprint_generations_full_total 1$/m);
    await gate.close();
  });

  it('the quota is validated', () => {
    const detection = createClientDetection({ prada: { enabled: false } });
    const deps = { defense: parseDefense('argmax'), tiers: new Map(), metrics: createServingMetrics() };
    for (const [given, shown] of [
      [0, '0'],
      [1.5, '1.5'],
      ['100', '"100"'],
    ] as const) {
      assert.throws(
        () => createClientGate({ identity: 'ip', detection, fingerprints: { maxEntriesPerIdentity: given as number } }, deps),
        (e: Error) => e.message === `clients.fingerprints.maxEntriesPerIdentity must be an integer ≥ 1, got ${shown}`,
      );
    }
    void createClientGate({ identity: 'ip', detection, fingerprints: { maxEntriesPerIdentity: 5000 } }, deps).close();
  });
});
