/**
 * A ladder `throttle:SECONDS` step paces the client: one request each SECONDS goes on (with the tier
 * below the throttle) and is observed, the others get 429 with the time left; the slot is taken
 * atomically, so a burst across replicas sharing Redis gets one answer per SECONDS.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { after, describe, it } from 'node:test';
import { parseDefense } from '../../../../src/defenses/index.js';
import { createClientDetection } from '../../../../src/detection/index.js';
import { type ClientRefusal, createClientGate } from '../../../../src/server/clients/gate.js';
import type { ClientsOptions } from '../../../../src/server/clients/options.js';
import { createRedisStore } from '../../../../src/server/clients/store-redis.js';
import { createServingMetrics, type ServingMetrics } from '../../../../src/server/metrics.js';
import { useRedisClient } from '../../helpers/redis-server.js';

const req = (key: string) => ({ headers: { 'x-api-key': key }, socket: {} }) as unknown as IncomingMessage;
/** Unconfident answers: the OOD detector flags after minQueries of them. */
const unsure = { rows: 1, cols: 2, data: Float32Array.from([0.55, 0.45]) };
const defense = parseDefense('mad-argmax:eps=0.5');
const argmax = parseDefense('argmax');
const throttled = (e: ClientRefusal) => e.status === 429;

/** OOD flags at 4 unconfident queries; the ladder's next step after 2 more, a 10 s pace in the second. */
function detection(steps: string[]) {
  return createClientDetection({
    ood: { maxRate: 0.5, minQueries: 4 },
    prada: { enabled: false },
    budget: false,
    policy: { steps, stepQueries: 2, calmQueries: 1_000, calmMs: 24 * 3_600_000 },
  });
}

function gateWith(steps: string[], store: ClientsOptions['store'], now: () => number, metrics: ServingMetrics = createServingMetrics()) {
  return createClientGate(
    { identity: 'header:x-api-key', detection: detection(steps), store },
    { defense, tiers: new Map([['argmax', argmax]]), metrics, now },
  );
}

type Gate = ReturnType<typeof gateWith>;

/** One request through the gate: its defense override, or the refusal. */
async function ask(gate: Gate, key: string) {
  const ticket = await gate.admit(req(key));
  return gate.observe(ticket, unsure, undefined, null);
}

/** Queries until the client is at the throttle step (the first 429 or paced answer is not counted here). */
async function climbToThrottle(gate: Gate, key: string): Promise<void> {
  for (let i = 0; i < 5; i++) await ask(gate, key);
}

const retryAfter = (e: unknown) => Number((e as ClientRefusal).headers['retry-after']);

describe('a ladder throttle paces the client', () => {
  it('memory store: one answer each SECONDS, with the tier below; the others 429 with the time left', async () => {
    let time = 1_000_000;
    const metrics = createServingMetrics();
    const gate = gateWith(['argmax', 'throttle:10'], { memory: { now: () => time } }, () => time, metrics);
    after(() => gate.close());
    await climbToThrottle(gate, 'thief');
    // The request that reaches the throttle takes the first slot: answered, with argmax.
    assert.equal(await ask(gate, 'thief'), argmax);
    for (const [elapsed, wait] of [
      [0, 10],
      [3_000, 7],
      [9_500, 1],
    ] as const) {
      time = 1_000_000 + elapsed;
      await assert.rejects(gate.admit(req('thief')), (e: ClientRefusal) => throttled(e) && retryAfter(e) === wait, `${elapsed} ms after the slot`);
    }
    // The slot frees: the next request goes on, is observed and answered with the tier below.
    time = 1_010_000;
    assert.equal(await ask(gate, 'thief'), argmax);
    await assert.rejects(gate.admit(req('thief')), throttled);
    // A burst when the slot frees: one goes on.
    time = 1_020_000;
    const burst = await Promise.allSettled(Array.from({ length: 5 }, () => gate.admit(req('thief'))));
    assert.equal(burst.filter((r) => r.status === 'fulfilled').length, 1);
    // Another client is not paced by this one's slot.
    assert.equal(await ask(gate, 'honest'), undefined);
    const text = await metrics.registry.metrics();
    assert.match(text, /msd_client_actions_total\{action="throttle",detector="ood"\} 8$/m);
  });

  it('a paced client that keeps flagging climbs on to the next step (it is observed)', async () => {
    let time = 1_000_000;
    const gate = gateWith(['argmax', 'throttle:10', 'refuse'], { memory: { now: () => time } }, () => time);
    after(() => gate.close());
    await climbToThrottle(gate, 'thief');
    assert.equal(await ask(gate, 'thief'), argmax);
    time += 10_000;
    assert.equal(await ask(gate, 'thief'), argmax);
    time += 10_000;
    // stepQueries (2) paced queries after the throttle, still flagging: refused.
    await assert.rejects(ask(gate, 'thief'), (e: ClientRefusal) => e.status === 403);
    time += 60_000;
    await assert.rejects(gate.admit(req('thief')), (e: ClientRefusal) => e.status === 403);
  });

  it('without a tier below the throttle, a paced answer gets the default defense even where chooseDefense skipped it', async () => {
    let time = 1_000_000;
    const gate = gateWith(['throttle:5'], { memory: { now: () => time } }, () => time);
    after(() => gate.close());
    // chooseDefense skips the defense for this key (null): kept while the client is not paced.
    for (let i = 0; i < 3; i++) assert.equal(await ask(gate, 'vip-key'), undefined);
    // The fourth flags: throttled, and this request takes the slot, answered with the default defense.
    assert.equal(await ask(gate, 'vip-key'), defense);
    await assert.rejects(gate.admit(req('vip-key')), (e: ClientRefusal) => throttled(e) && retryAfter(e) === 5);
    time += 5_000;
    assert.equal(await ask(gate, 'vip-key'), defense);
  });

  it('the pace is per row: a paced request of n rows keeps the slot n × SECONDS', async () => {
    let time = 1_000_000;
    const gate = gateWith(['argmax', 'throttle:10'], { memory: { now: () => time } }, () => time);
    after(() => gate.close());
    await climbToThrottle(gate, 'thief');
    assert.equal(await ask(gate, 'thief'), argmax);
    time += 10_000;
    // 25 rows in the next paced request: answered, and the slot is held 250 s.
    const rows = 25;
    const batch = { rows, cols: 2, data: new Float32Array(rows * 2).fill(0.5) };
    assert.equal(await gate.observe(await gate.admit(req('thief')), batch, undefined, null), argmax);
    time += 240_000;
    await assert.rejects(gate.admit(req('thief')), (e: ClientRefusal) => throttled(e) && retryAfter(e) === 10);
    time += 10_000;
    assert.equal(await ask(gate, 'thief'), argmax);
  });

  describe('redis store (real redis-server)', () => {
    const shared = useRedisClient();

    it('two replicas: a burst when the slot frees gets one answer in all, the slot a key under the prefix', async () => {
      let time = 5_000_000;
      const store = { redis: shared.server.url, keyPrefix: 'pace:' };
      const replicas = [gateWith(['argmax', 'throttle:2'], store, () => time), gateWith(['argmax', 'throttle:2'], store, () => time)];
      after(() => Promise.all(replicas.map((g) => g.close())));
      await Promise.all(replicas.map((g) => g.ready()));
      await climbToThrottle(replicas[0], 'thief');
      assert.equal(await ask(replicas[1], 'thief'), argmax);
      const [slot] = await shared.client.keys('pace:~pace:*');
      assert.ok(slot, 'the slot is a key under the store prefix');
      const left = await shared.client.pttl(slot);
      assert.ok(left > 0 && left <= 2_000, `the slot frees in ${left} ms`);
      // A paced request of 3 rows would hold it 6 s: Redis keeps the longer hold.
      const direct = await createRedisStore({ redis: shared.server.url, keyPrefix: 'pace:' });
      after(() => direct.close());
      await direct.ready();
      await direct.hold(slot.slice('pace:~pace:'.length), 6_000);
      assert.ok((await shared.client.pttl(slot)) > 5_000);
      await direct.hold(slot.slice('pace:~pace:'.length), 1_000);
      assert.ok((await shared.client.pttl(slot)) > 5_000, 'a shorter hold never shortens the slot');
      await shared.client.pexpire(slot, left);
      // Slots live on Redis's clock: wait it out, then 20 requests at once over both replicas.
      await new Promise((resolve) => setTimeout(resolve, left + 50));
      time += 3_000;
      const burst = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => replicas[i % 2].admit(req('thief'))));
      const admitted = burst.filter((r) => r.status === 'fulfilled');
      assert.equal(admitted.length, 1, `${admitted.length} of 20 admitted`);
      for (const r of burst) if (r.status === 'rejected') assert.ok(throttled(r.reason), String(r.reason));
    });
  });
});
