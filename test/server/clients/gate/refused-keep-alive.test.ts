import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { after, describe, it } from 'node:test';
import { parseDefense } from '../../../../src/defenses/index.js';
import type { Assessment, ClientDetection } from '../../../../src/detection/types.js';
import { type ClientRefusal, createClientGate } from '../../../../src/server/clients/gate.js';
import type { ClientsOptions } from '../../../../src/server/clients/options.js';
import { createServingMetrics } from '../../../../src/server/metrics.js';
import { useRedisClient } from '../../helpers/redis-server.js';

/** Refuses a client from its second query on, for good (no clock of its own). */
const refuseAfterOne: ClientDetection = {
  initialState: () => ({ queries: 0 }),
  observe(state, observation) {
    const next = { queries: (state.queries as number) + observation.probs.rows };
    return { state: next, assessment: { ...this.assess(next, observation.time), changed: next.queries === 2 } };
  },
  assess(state): Assessment {
    const refused = (state.queries as number) >= 2;
    return {
      action: refused ? 'refuse' : 'default',
      changed: false,
      verdicts: [{ detector: 'count', flagged: refused, score: refused ? 1 : 0, evidence: {} }],
    };
  },
};

const req = (key: string) => ({ headers: { 'x-api-key': key }, socket: {} }) as unknown as IncomingMessage;
const probs = { rows: 1, cols: 2, data: Float32Array.from([0.6, 0.4]) };
const defense = parseDefense('argmax');
const refused = (e: ClientRefusal) => e.status === 403;

function gateWith(store: ClientsOptions['store'], now: () => number) {
  return createClientGate(
    { identity: 'header:x-api-key', detection: refuseAfterOne, store },
    { defense, tiers: new Map(), metrics: createServingMetrics(), now },
  );
}

async function refuse(gate: ReturnType<typeof gateWith>, key: string): Promise<void> {
  await gate.observe(await gate.admit(req(key)), probs, undefined, defense);
  await assert.rejects(gate.observe(await gate.admit(req(key)), probs, undefined, defense), refused);
}

describe('a refused client that keeps knocking stays refused', () => {
  it('memory store: each refused request keeps the record ttlMs longer; silence for ttlMs forgets it', async () => {
    let time = 1_000_000;
    const gate = gateWith({ memory: { ttlMs: 10_000, now: () => time } }, () => time);
    after(() => gate.close());
    await refuse(gate, 'thief');
    // One refused request a second for three times the ttl: refused every time.
    for (let second = 1; second <= 30; second++) {
      time += 1_000;
      await assert.rejects(gate.admit(req('thief')), refused, `admitted ${second} s after its last answered query`);
    }
    // Quiet for the whole ttl: forgotten, as the docs say (ttlMs after its last request).
    time += 10_001;
    await gate.admit(req('thief'));
  });

  describe('redis store (real redis-server)', () => {
    const shared = useRedisClient();

    it("refreshes the key's expiry and its index entry on every refused request", async () => {
      const raw = shared.client;
      const gate = gateWith({ redis: shared.server.url, keyPrefix: 'ka:', ttlMs: 1_500 }, Date.now);
      after(() => gate.close());
      await gate.ready();
      await refuse(gate, 'thief');
      const [key] = (await raw.keys('ka:*')).filter((k) => !k.includes('~'));
      const scoreBefore = Number(await raw.zscore('ka:~index:3', key.slice(3)));
      // Refused every 300 ms for 3 s, twice the ttl: the record is still there and still refuses.
      for (let i = 0; i < 10; i++) {
        await new Promise((resolve) => setTimeout(resolve, 300));
        await assert.rejects(gate.admit(req('thief')), refused, `admitted after ${(i + 1) * 300} ms`);
      }
      const ttl = await raw.pttl(key);
      assert.ok(ttl > 1_000, `the key expires in ${ttl} ms`);
      const scoreAfter = Number(await raw.zscore('ka:~index:3', key.slice(3)));
      assert.ok(scoreAfter - scoreBefore >= 2_500, `index score moved ${scoreAfter - scoreBefore} ms`);
      // A client the store does not hold gets no key from it.
      await gate.admit(req('newcomer'));
      assert.equal((await raw.keys('ka:*')).filter((k) => !k.includes('~')).length, 1);
    });
  });
});
