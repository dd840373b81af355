import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { parseDefense } from '../../../../src/defenses/index.js';
import type { ClientsOptions } from '../../../../src/server/clients/options.js';
import { rng } from '../../../detection/synthetic.js';
import { waitFor } from '../../../helpers/wait.js';
import { aboveGate, confident, unsure } from '../../helpers/above-gate.js';
import { startRedis, type TestRedis } from '../../helpers/redis-server.js';

const argmax = parseDefense('argmax');
const tiers = new Map([['argmax', argmax]]);

describe('detection above the client, shared across replicas in Redis', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.stop());

  const replica = (extra: Partial<ClientsOptions>) => aboveGate({ store: { redis: redis.url, keyPrefix: 'above:' }, ...extra }, { tiers });

  it('a thief split over replicas and identities: the population alarm from their summed counts, cohorts and fingerprints shared', async (t) => {
    const options: Partial<ClientsOptions> = {
      population: { minQueries: 40, youngQueries: 20, classes: { enabled: false }, flushMs: 10 },
      cohort: 'header:x-tenant',
      fingerprints: { maxEntries: 10_000 },
    };
    const [a, b] = [replica(options), replica(options)];
    t.after(async () => {
      await a.gate.close();
      await b.gate.close();
    });
    await a.gate.ready();
    await b.gate.ready();
    // 30 unsure young queries at each replica, 60 in all: under minQueries (40) at each, over it together.
    for (let i = 0; i < 60; i++) await (i % 2 ? a : b).ask(`sybil-${i}`, unsure);
    // Each replica flushes its counts every 10 ms and reads the other's back.
    await waitFor(() => [a, b].every((r) => (r.gate.populationStatus()?.views.young.queries ?? 0) >= 60), {
      what: 'both replicas to hold the 60 young queries of both',
      detail: () => [a, b].map((r) => r.gate.populationStatus()?.views.young.queries),
    });
    assert.equal(await a.ask('sybil-x', unsure), argmax, 'replica a judges the summed counts');
    assert.equal(await b.ask('sybil-y', unsure), argmax, 'and so does replica b');
    assert.ok(a.logs.lines.some((l) => String(l.msg).startsWith('population alarm started')));
    assert.ok(((await a.gate.overview(1)).population?.views.young.queries ?? 0) >= 61, 'the young view holds both replicas’ queries');
    // A cohort's history is one key, whichever replica its members use.
    for (let i = 0; i < 50; i++) await (i % 2 ? a : b).ask(`member-${i}`, unsure, { 'x-tenant': 'org' });
    const overview = await a.gate.overview(5);
    assert.equal(overview.cohorts?.[0].action, 'escalate');
    assert.equal(overview.cohorts?.[0].verdicts.find((v) => v.detector === 'ood')?.evidence.queries, 50);
    // 200 concurrent requests of one cohort at two replicas: group-committed, none lost, no contention failure.
    const burst = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).ask(`burst-${i}`, confident, { 'x-tenant': 'big-org' })));
    assert.equal(burst.length, 200);
    const big = (await a.gate.overview(10)).cohorts?.find((c) => c.verdicts.find((v) => v.detector === 'ood')?.evidence.queries === 200);
    assert.ok(big, 'the big cohort holds all 200 queries');
    // Fingerprints written at one replica match at the other.
    const random = rng(5);
    const image = { rows: 1, cols: 784, data: Float32Array.from({ length: 784 }, () => (random() < 0.2 ? 0.9 : 0)) };
    await a.ask('alice', confident, {}, image);
    await b.ask('bob', confident, {}, image);
    const bobState = (await b.gate.suspicious(100)).find((c) => c.verdicts.some((v) => v.detector === 'fingerprint' && v.evidence.matched === 1));
    assert.ok(bobState, 'bob’s query matched alice’s across replicas');
    // Bounded keys: population buckets (2 views × a few buckets), two fingerprint generations at most.
    const probe = new Redis(redis.url);
    t.after(() => probe.disconnect());
    const keys = await probe.keys('above:~*');
    const pop = keys.filter((k) => k.startsWith('above:~pop:'));
    const fp = keys.filter((k) => k.startsWith('above:~fp:'));
    assert.ok(pop.length >= 2 && pop.length <= 4, pop.join(', '));
    assert.ok(fp.length >= 1 && fp.length <= 2, fp.join(', '));
    for (const key of [...pop, ...fp]) assert.ok((await probe.pttl(key)) > 0, `${key} expires`);
  });
});

describe('a flagged cohort through a Redis outage', () => {
  it('stays flagged (fail mode "local"): its members keep the probation tier while the store is out', async (t) => {
    const redis = await startRedis();
    const { gate, ask } = aboveGate(
      { cohort: 'header:x-tenant', failMode: 'local', store: { redis: redis.url, keyPrefix: 'outage:', commandTimeoutMs: 2_000 } },
      { tiers },
    );
    t.after(async () => {
      await gate.close();
      await redis.stop();
    });
    await gate.ready();
    const thief = { 'x-tenant': 'org-thief' };
    // 50 identities of one tenant, one unsure query each: the cohort's OOD flags at its 50th query.
    for (let id = 0; id < 49; id++) assert.equal(await ask(`member-${id}`, unsure, thief), undefined);
    assert.equal(await ask('member-49', unsure, thief), argmax, 'the cohort is flagged');
    assert.equal(await ask('member-50', confident, thief), argmax, 'a member’s confident query too');
    await redis.kill();
    for (let id = 51; id < 54; id++) assert.equal(await ask(`member-${id}`, confident, thief), argmax, 'still on probation while the shared store is out');
  });
});
