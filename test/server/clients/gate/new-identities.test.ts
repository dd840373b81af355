import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { parseDefense } from '../../../../src/defenses/index.js';
import { createClientDetection } from '../../../../src/detection/index.js';
import { createClientGate } from '../../../../src/server/clients/gate.js';
import type { ClientsOptions } from '../../../../src/server/clients/options.js';
import { ServingOptionError } from '../../../../src/server/errors.js';
import { createLogger } from '../../../../src/server/logger.js';
import { createServingMetrics } from '../../../../src/server/metrics.js';
import { lineCollector } from '../../helpers/fixtures.js';

const req = (key: string) => ({ headers: { 'x-api-key': key }, socket: {} }) as unknown as IncomingMessage;
const probs = { rows: 1, cols: 2, data: Float32Array.from([0.9, 0.1]) };
const defense = parseDefense('rounding:decimals=2');
const argmax = parseDefense('argmax');
const tiers = new Map([['argmax', argmax]]);

function gateWith(newClients: ClientsOptions['newClients'], start = 1_800_000_000_000) {
  let time = start;
  const logs = lineCollector();
  const metrics = createServingMetrics();
  const detection = createClientDetection({ prada: { enabled: false }, ood: { enabled: false } });
  const gate = createClientGate(
    { identity: 'header:x-api-key', detection, newClients },
    { defense, tiers, metrics, logger: createLogger({}, logs.stream), now: () => time },
  );
  /** One query of `key`: the defense replacing the chosen one (the probation tier), or undefined. */
  const ask = async (key: string) => gate.observe(await gate.admit(req(key)), probs, undefined, defense);
  return { gate, logs, metrics, ask, advance: (ms: number) => (time += ms) };
}

describe('the new-identity rule: identities cost something', () => {
  it('over maxPerMinute new identities a minute, clients with less than historyQueries queries get the probation tier', async () => {
    const { gate, logs, metrics, ask, advance } = gateWith({ maxPerMinute: 5, historyQueries: 3, tier: 'argmax' });
    // A regular client with history, before any flood.
    for (let i = 0; i < 3; i++) assert.equal(await ask('key-regular-01'), undefined);
    // Four more new identities: five in this minute, at the limit, not over it.
    for (let i = 0; i < 4; i++) assert.equal(await ask(`key-new-${i}`), undefined, `identity ${i} within the limit`);
    // The sixth new identity this minute (a Sybil thief taking fresh keys) is on probation.
    assert.equal(await ask('key-sybil-0'), argmax);
    assert.equal(await ask('key-sybil-0'), argmax, 'still without history');
    assert.equal(await ask('key-sybil-0'), undefined, 'its third query: history reached, the default again');
    assert.equal(await ask('key-regular-01'), undefined, 'a client with history is not affected');
    assert.ok(logs.lines.some((l) => l.msg === 'new client identities over the limit: clients with little history get the probation tier'));
    assert.match(await metrics.registry.getSingleMetricAsString('msd_client_probation_total'), /msd_client_probation_total 2/);
    assert.match(await metrics.registry.getSingleMetricAsString('msd_client_new_identities_total'), /msd_client_new_identities_total 6/);
    // Two quiet minutes later the rate is back under the limit: a new identity gets the default.
    advance(120_000);
    assert.equal(await ask('key-late-0001'), undefined);
    assert.ok(logs.lines.some((l) => l.msg === 'new client identities back under the limit'));
    await gate.close();
  });

  it('counts the rate over a sliding minute, not per calendar minute', async () => {
    // Start 10 s before a minute boundary: 4 identities, then 3 more just after it (7 within 20 s).
    const { gate, ask, advance } = gateWith({ maxPerMinute: 5, historyQueries: 3, tier: 'argmax' }, 1_800_000_050_000 - (1_800_000_050_000 % 60_000) + 50_000);
    for (let i = 0; i < 4; i++) assert.equal(await ask(`key-a-${i}`), undefined);
    advance(15_000);
    assert.equal(await ask('key-b-0'), undefined);
    assert.equal(await ask('key-b-1'), argmax, 'about 4·(1 − 5/60) + 2 > 5 new identities in the last minute');
    await gate.close();
  });

  it('counts identities, not admissions: unobserved requests and parallel first requests of one key count once', async () => {
    const { gate, metrics, ask } = gateWith({ maxPerMinute: 5, historyQueries: 3, tier: 'argmax' });
    // One key's six admissions that are never observed (unreadable bodies, upstream failures).
    for (let i = 0; i < 6; i++) await gate.admit(req('key-junk'));
    // Another key's six first requests at once.
    const tickets = await Promise.all(Array.from({ length: 6 }, () => gate.admit(req('key-burst'))));
    await Promise.all(tickets.map((ticket) => gate.observe(ticket, probs, undefined, defense)));
    assert.match(await metrics.registry.getSingleMetricAsString('msd_client_new_identities_total'), /msd_client_new_identities_total 1$/m);
    // Far under the limit: a newcomer keeps the default defense.
    assert.equal(await ask('key-newcomer'), undefined);
    await gate.close();
  });

  it('ends a flood only when the rate falls to 80% of the limit: one line each way, however the rate hovers', async () => {
    const { gate, logs, ask, advance } = gateWith({ maxPerMinute: 10, historyQueries: 1000, tier: 'argmax' }, 1_800_000_040_000);
    // 11 new identities at once: over the limit.
    for (let i = 0; i < 11; i++) await ask(`key-a-${i}`);
    // Then one new identity every 6 s, the rate hovering about the limit as the window slides, and a
    // young client asking just before each (the rule is judged at every young client's answer).
    for (let i = 0; i < 20; i++) {
      advance(5_999);
      await ask('key-a-0');
      advance(1);
      await ask(`key-b-${i}`);
    }
    const lines = logs.lines.filter((l) => /^new client identities/.test(l.msg as string));
    assert.ok(lines.length <= 2, `${lines.length} lines: ${lines.map((l) => `${l.msg} (${l.newPerMinute})`).join('; ')}`);
    assert.equal(lines[0]?.msg, 'new client identities over the limit: clients with little history get the probation tier');
    // A quiet two minutes: under 80% of the limit, the flood ends, once.
    advance(120_000);
    assert.equal(await ask('key-late'), undefined);
    assert.equal(logs.lines.filter((l) => l.msg === 'new client identities back under the limit').length, 1);
    await gate.close();
  });

  it('never puts clients on probation with a tier that passes the model probabilities through', async () => {
    const passing = new Map([
      ['none', parseDefense('none')],
      ['top2', parseDefense('topk:k=2')],
    ]);
    const detection = createClientDetection({ prada: { enabled: false } });
    for (const tier of ['none', 'top2'])
      assert.throws(
        () => createClientGate({ identity: 'ip', detection, newClients: { tier } }, { defense, tiers: passing, metrics: createServingMetrics() }),
        (e: Error) =>
          e instanceof ServingOptionError && e.message.includes(`newClients.tier "${tier}"`) && /passes the model's probabilities through/.test(e.message),
      );
    // Taken by default from escalationTier: the rule is off (and says so) rather than answering with it.
    const logs = lineCollector();
    const gate = createClientGate(
      { identity: 'header:x-api-key', detection, escalationTier: 'none', newClients: undefined },
      { defense, tiers: passing, metrics: createServingMetrics(), logger: createLogger({}, logs.stream), now: () => 1_800_000_000_000 },
    );
    for (let i = 0; i < 700; i++) assert.equal(await gate.observe(await gate.admit(req(`key-${i}`)), probs, undefined, defense), undefined);
    assert.ok(logs.lines.some((l) => /new-identity rule off: its tier passes/.test(l.msg as string)));
    await gate.close();
  });

  it('is off with newClients: false, and refuses a tier that does not exist', async () => {
    const { gate, ask } = gateWith(false);
    for (let i = 0; i < 20; i++) assert.equal(await ask(`key-${i}`), undefined);
    await gate.close();
    const detection = createClientDetection();
    assert.throws(
      () => createClientGate({ identity: 'ip', detection, newClients: { tier: 'nope' } }, { defense, tiers, metrics: createServingMetrics() }),
      (e: Error) => e instanceof ServingOptionError && /newClients\.tier names tier "nope"/.test(e.message),
    );
    assert.throws(
      () => createClientGate({ identity: 'ip', detection, newClients: { maxPerMinute: 0 } }, { defense, tiers, metrics: createServingMetrics() }),
      /maxPerMinute must be a positive integer/,
    );
  });

  it('is on by default with the detection policy’s first tier (600 new identities a minute)', async () => {
    const time = 1_800_000_000_000;
    const madArgmax = parseDefense('mad:eps=0.5,oracle=argmax');
    const gate = createClientGate(
      { identity: 'header:x-api-key', detection: createClientDetection({ prada: { enabled: false } }) },
      {
        defense,
        tiers: new Map([
          ['mad-argmax', madArgmax],
          ['argmax', argmax],
        ]),
        metrics: createServingMetrics(),
        now: () => time,
      },
    );
    const seen: unknown[] = [];
    for (let i = 0; i < 601; i++) seen.push(await gate.observe(await gate.admit(req(`key-${i}`)), probs, undefined, defense));
    assert.equal(seen.filter((d) => d === undefined).length, 600);
    assert.equal(seen[600], madArgmax);
    await gate.close();
  });
});
