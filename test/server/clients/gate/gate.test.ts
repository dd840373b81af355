import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { parseDefense } from '../../../../src/defenses/index.js';
import type { Assessment, ClientDetection } from '../../../../src/detection/types.js';
import { type ClientRefusal, createClientGate } from '../../../../src/server/clients/gate.js';
import { createLogger } from '../../../../src/server/logger.js';
import { createServingMetrics } from '../../../../src/server/metrics.js';
import { lineCollector } from '../../helpers/fixtures.js';

/** Throttles for 10 s after every third query, by the clock passed in. */
const cooldownDetection: ClientDetection = {
  initialState: () => ({ queries: 0, until: 0 }),
  observe(state, observation) {
    const queries = (state.queries as number) + 1;
    const until = queries % 3 === 0 ? observation.time + 10_000 : (state.until as number);
    const next = { queries, until };
    const before = (state.until as number) > observation.time ? 'throttle' : 'default';
    const assessment = this.assess(next, observation.time);
    return { state: next, assessment: { ...assessment, changed: assessment.action !== before } };
  },
  assess(state, time): Assessment {
    const left = (state.until as number) - time;
    return left > 0
      ? {
          action: 'throttle',
          retryAfterSeconds: left / 1000,
          changed: false,
          verdicts: [{ detector: 'cooldown', flagged: true, score: 1, evidence: { queries: state.queries as number } }],
        }
      : { action: 'default', changed: false, verdicts: [{ detector: 'cooldown', flagged: false, score: 0, evidence: { queries: state.queries as number } }] };
  },
};

const req = (key: string) => ({ headers: { 'x-api-key': key }, socket: {} }) as unknown as IncomingMessage;
const probs = { rows: 1, cols: 2, data: Float32Array.from([0.6, 0.4]) };

describe('client gate', () => {
  it('throttles with the remaining seconds, lets the client back when the time is up, and logs both changes', async () => {
    let time = 1_000_000;
    const logs = lineCollector();
    const defense = parseDefense('argmax');
    const gate = createClientGate(
      { identity: 'header:x-api-key', detection: cooldownDetection },
      { defense, tiers: new Map(), metrics: createServingMetrics(), logger: createLogger({}, logs.stream), now: () => time },
    );
    for (let i = 0; i < 2; i++) await gate.observe(await gate.admit(req('key-1')), probs, undefined, defense);
    await assert.rejects(
      gate.observe(await gate.admit(req('key-1')), probs, undefined, defense),
      (e: ClientRefusal) => e.status === 429 && e.headers['retry-after'] === '10',
    );
    time += 4_000;
    await assert.rejects(gate.admit(req('key-1')), (e: ClientRefusal) => e.status === 429 && e.headers['retry-after'] === '6');
    await gate.admit(req('key-2'));
    time += 6_000;
    await gate.admit(req('key-1'));
    const changes = logs.lines.filter((l) => l.msg === 'client action changed').map((l) => [l.action, l.previous]);
    assert.deepEqual(changes, [
      ['throttle', 'default'],
      ['default', 'throttle'],
    ]);
  });
});
