import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, it } from 'node:test';
import { parseDefense } from '../../../../src/defenses/index.js';
import { createClientDetection } from '../../../../src/detection/index.js';
import { adminHandler } from '../../../../src/server/clients/admin.js';
import { createClientGate } from '../../../../src/server/clients/gate.js';
import type { ClientsOptions } from '../../../../src/server/clients/options.js';
import { ServingOptionError } from '../../../../src/server/errors.js';
import { createServingMetrics } from '../../../../src/server/metrics.js';
import { rng } from '../../../detection/synthetic.js';
import { aboveGate, confident, defaultDefense as defense, unsure } from '../../helpers/above-gate.js';

const argmax = parseDefense('argmax');
const reverseSigmoid = parseDefense('reverse-sigmoid:beta=0.7,gamma=0.2');
const tiers = new Map([
  ['reverse-sigmoid', reverseSigmoid],
  ['argmax', argmax],
]);
const MINUTE = 60_000;
const gateWith = (extra: Partial<ClientsOptions>) => aboveGate(extra, { tiers });

describe('population detection in the gate', () => {
  it('during an alarm young identities get the probation tier (top-1 kept), older clean ones keep the default; pino lines at start and end', async () => {
    const { gate, logs, metrics, ask, advance } = gateWith({
      population: { minQueries: 40, youngQueries: 20, classes: { enabled: false }, alarm: { calmMs: 5 * MINUTE } },
    });
    // An old, clean client (30 confident queries) and an old client whose own share of unsure queries is high.
    for (let i = 0; i < 30; i++) assert.equal(await ask('regular-client'), undefined);
    for (let i = 0; i < 30; i++) assert.equal(await ask('old-suspect', i % 5 === 0 ? unsure : confident), undefined, 'no alarm yet');
    // A Sybil thief: 40 identities, 5 unsure queries each (young: fewer than 20 queries).
    const answers: unknown[] = [];
    for (let round = 0; round < 5; round++) for (let id = 0; id < 40; id++) answers.push(await ask(`sybil-${id}`, unsure));
    const firstProbation = answers.indexOf(argmax);
    assert.ok(firstProbation > 0 && firstProbation <= 40, `the young view flags once 40 young queries are in (first probation at ${firstProbation})`);
    assert.ok(
      answers.slice(firstProbation).every((a) => a === argmax),
      'every later thief answer is on probation',
    );
    assert.equal(await ask('newcomer', confident), argmax, 'an honest newcomer during the alarm: probation, top-1 kept');
    assert.equal(await ask('regular-client'), undefined, 'an older client with a clean history keeps its answers');
    assert.equal(await ask('old-suspect'), argmax, 'an older client unsure on a fifth of its queries (over suspectRate 0.15) is a suspect');
    const started = logs.lines.filter((l) => l.msg === 'population alarm started: young identities and suspects get the probation tier');
    assert.ok(started.length >= 1, 'logged when it starts');
    assert.equal(started[0].tier, 'argmax', 'the first tier of the ladder that keeps top-1 (reverse-sigmoid does not)');
    // The admin listing shows the views, the metrics carry no client.
    const overview = await gate.overview(10);
    assert.equal(overview.population?.views.young.alarm, true);
    assert.equal(overview.population?.youngQueries, 20);
    const text = await metrics.registry.metrics();
    assert.match(text, /msd_population_alarm\{view="young"\} 1/);
    assert.match(text, /msd_population_alarms_total\{view="young"\} 1/);
    assert.match(text, /msd_population_probation_total\{reason="young"\} \d+/);
    assert.match(text, /msd_population_probation_total\{reason="suspect"\} 1/);
    assert.match(text, /msd_population_score\{view="young",detector="ood"\} 0\.8\d+/);
    assert.doesNotMatch(text, /sybil|regular|newcomer/);
    // The thief stops; confident traffic of old clients for 10 minutes (window) plus the calm period ends it.
    for (let m = 0; m < 20; m++) {
      advance(MINUTE);
      await ask('regular-client');
    }
    assert.ok(logs.lines.some((l) => l.msg === 'population alarm ended' && l.view === 'young'));
    assert.equal(await ask('another-newcomer'), undefined, 'after the alarm: the default again');
    await gate.close();
  });

  it('needs a probation tier that keeps top-1', () => {
    const detection = createClientDetection({ prada: { enabled: false } });
    const metrics = createServingMetrics();
    assert.throws(
      () => createClientGate({ identity: 'ip', detection, population: {}, probationTier: 'reverse-sigmoid' }, { defense, tiers, metrics }),
      (e: Error) => e instanceof ServingOptionError && /must keep top-1/.test(e.message),
    );
    assert.throws(
      () => createClientGate({ identity: 'ip', detection, population: {} }, { defense, tiers: new Map([['reverse-sigmoid', reverseSigmoid]]), metrics }),
      /need a probation tier that keeps top-1/,
    );
    assert.throws(
      () => createClientGate({ identity: 'ip', detection, population: { ood: { maxRate: 3 } } }, { defense, tiers, metrics }),
      /clients\.population: population option ood\.maxRate/,
    );
    assert.throws(
      () => createClientGate({ identity: 'ip', detection, fingerprints: { hashes: 0 } }, { defense, tiers, metrics }),
      /clients\.fingerprints: fingerprint option hashes/,
    );
    assert.throws(
      () => createClientGate({ identity: 'header:x', detection, trustProxy: ['10.0.0.0/8'] }, { defense, tiers, metrics }),
      /identity "ip" or cohort "ip"/,
    );
    // trustProxy with cohort "ip" and another identity is fine.
    const gate = createClientGate({ identity: 'header:x-api-key', cohort: 'ip', trustProxy: ['10.0.0.0/8'], detection }, { defense, tiers, metrics });
    void gate.close();
  });
});

describe('cohorts in the gate', () => {
  it('the detectors judge a cohort’s traffic as one client’s: its members get the probation tier, other cohorts do not', async () => {
    const { gate, logs, ask } = gateWith({ cohort: 'header:x-tenant' });
    const thiefOrg = { 'x-tenant': 'org-thief' };
    const honestOrg = { 'x-tenant': 'org-honest' };
    // 60 identities of one tenant, one unsure query each: each alone is far under OOD's 50 queries.
    const answers: unknown[] = [];
    for (let id = 0; id < 60; id++) answers.push(await ask(`member-${id}`, unsure, thiefOrg));
    assert.equal(answers.indexOf(argmax), 49, 'the cohort’s OOD flags at its 50th query, and that answer is already on probation');
    assert.ok(answers.slice(49).every((a) => a === argmax));
    assert.equal(await ask('new-member', confident, thiefOrg), argmax, 'a confident query of the flagged cohort too');
    for (let id = 0; id < 10; id++) assert.equal(await ask(`honest-${id}`, confident, honestOrg), undefined, 'another cohort is not affected');
    assert.equal(await ask('no-tenant', confident), undefined, 'no cohort key: judged alone');
    const changed = logs.lines.find((l) => l.msg === 'cohort action changed');
    assert.equal(changed?.action, 'escalate');
    assert.match(String(changed?.reason), /ood/);
    assert.match(String(changed?.cohort), /^[0-9a-f]{32}$/, 'hashed, never the raw tenant');
    assert.ok(!logs.raw.join('').includes('org-thief'));
    const overview = await gate.overview(10);
    assert.equal(overview.cohorts?.[0].action, 'escalate');
    assert.ok(
      overview.clients.every((c) => !c.id.startsWith('~cohort:')),
      'cohorts are listed apart from clients',
    );
    // The admin route answers the same listing.
    const token = 'admin-token-0123456789';
    const answer = await new Promise<{ status: number; body: { clients: unknown[]; cohorts: { action: string }[] } }>((resolve) => {
      let status = 0;
      const res = {
        writeHead: (code: number) => {
          status = code;
        },
        end: (text: string) => resolve({ status, body: JSON.parse(text) }),
      } as unknown as ServerResponse;
      adminHandler(gate, { token })({ method: 'GET', headers: { authorization: `Bearer ${token}` } } as IncomingMessage, res);
    });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.cohorts[0].action, 'escalate');
    assert.ok(answer.body.clients.length > 0);
    await gate.close();
  });
});

describe('fingerprints in the gate', () => {
  it('identities re-sending one another’s queries are flagged by their fingerprint detector', async () => {
    const { gate, ask, metrics } = gateWith({ fingerprints: { ttlMs: 3_600_000 } });
    const image = (seed: number) => {
      const random = rng(seed);
      return Float32Array.from({ length: 784 }, () => (random() < 0.2 ? 0.9 : 0));
    };
    const inputs = (seed: number) => ({ rows: 1, cols: 784, data: image(seed) });
    // Alice sends 10 images; Bob sends the same 10 (a thief spreading one query set over keys).
    for (let s = 0; s < 10; s++) assert.equal(await ask('alice', confident, {}, inputs(s)), undefined);
    const bob: unknown[] = [];
    for (let s = 0; s < 10; s++) bob.push(await ask('bob', confident, {}, inputs(s)));
    assert.equal(bob.indexOf(reverseSigmoid), 4, 'flagged at its 5th matching query (minMatches 5): the ladder’s first tier');
    // Carol's own images match nobody.
    for (let s = 100; s < 110; s++) assert.equal(await ask('carol', confident, {}, inputs(s)), undefined);
    assert.match(await metrics.registry.getSingleMetricAsString('msd_fingerprint_matches_total'), /msd_fingerprint_matches_total 10/);
    assert.match(await metrics.registry.getSingleMetricAsString('msd_fingerprint_entries'), /msd_fingerprint_entries \d+/);
    assert.equal(gate.requiresInputs, true, 'fingerprints need the inputs');
    await gate.close();
  });
});
