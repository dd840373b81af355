import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { parseDefense } from '../../../../src/defenses/index.js';
import { createClientDetection } from '../../../../src/detection/index.js';
import { type ClientRefusal, createClientGate } from '../../../../src/server/clients/gate.js';
import { createLogger } from '../../../../src/server/logger.js';
import { createServingMetrics } from '../../../../src/server/metrics.js';
import { countDetection } from '../../helpers/count-detection.js';
import { lineCollector } from '../../helpers/fixtures.js';

const req = (key: string) => ({ headers: { 'x-api-key': key }, socket: {} }) as unknown as IncomingMessage;
const probs = { rows: 1, cols: 2, data: Float32Array.from([0.9, 0.1]) };

describe('client gate with the real detection', () => {
  it('logs a change first seen at admission once, not again at the next observation', async () => {
    // The real detection reports `changed` against the action stored at its last observe, so the
    // first observe after a throttle ran out reports default-after-throttle again.
    const detection = createClientDetection({
      window: { lengthMs: 60_000, bucketMs: 1_000 },
      budget: { maxQueries: 3 },
      ood: { enabled: false },
      prada: { enabled: false },
    });
    let time = 1_000_000;
    const logs = lineCollector();
    const defense = parseDefense('argmax');
    const metrics = createServingMetrics();
    const gate = createClientGate(
      { identity: 'header:x-api-key', detection },
      { defense, tiers: new Map(), metrics, logger: createLogger({}, logs.stream), now: () => time },
    );
    const ask = async () => gate.observe(await gate.admit(req('key-1')), probs, undefined, defense);
    for (let i = 0; i < 2; i++) await ask();
    await assert.rejects(ask(), (e: ClientRefusal) => e.status === 429);
    time += 61_000;
    await ask();
    await ask();
    const changes = logs.lines.filter((l) => l.msg === 'client action changed').map((l) => [l.action, l.previous]);
    assert.deepEqual(changes, [
      ['throttle', 'default'],
      ['default', 'throttle'],
    ]);
    const counted = (await metrics.registry.getSingleMetricAsString('msd_client_action_changes_total'))
      .split('\n')
      .filter((l) => !l.startsWith('#') && l.trim());
    assert.equal(
      counted.reduce((sum, l) => sum + Number(l.split(' ').pop()), 0),
      2,
      counted.join('\n'),
    );
    await gate.close();
  });

  it("passes each row's hardness from clients.hardness to the detectors, and withholds the answer when it fails", async () => {
    const detection = countDetection({});
    const seen: number[][] = [];
    let broken = false;
    const hardness = (inputs: { rows: number; cols: number; data: Float32Array }) => {
      if (broken) throw new Error('checkpoint model gone');
      seen.push(Array.from(inputs.data));
      return Int8Array.from({ length: inputs.rows }, (_, r) => Math.round(inputs.data[r * inputs.cols] * 10));
    };
    const defense = parseDefense('argmax');
    const gate = createClientGate(
      { identity: 'header:x-api-key', detection, observeInputs: false, hardness },
      { defense, tiers: new Map(), metrics: createServingMetrics() },
    );
    assert.equal(gate.observeInputs, true, 'the inputs are read for the hardness');
    const inputs = { rows: 2, cols: 2, data: Float32Array.from([0.25, 0, 0.75, 1]) };
    await gate.observe(await gate.admit(req('a')), { rows: 2, cols: 2, data: Float32Array.from([0.6, 0.4, 0.2, 0.8]) }, inputs, defense);
    assert.deepEqual(seen, [[0.25, 0, 0.75, 1]]);
    assert.deepEqual(Array.from(detection.observed[0].hardness!), [3, 8]);
    assert.equal(detection.observed[0].inputs, undefined, 'observeInputs false keeps the inputs from the detectors');
    broken = true;
    await assert.rejects(
      gate.observe(await gate.admit(req('a')), probs, { rows: 1, cols: 2, data: Float32Array.from([0.1, 0.2]) }, defense),
      (e: Error & { status?: number }) => e.status === 500 && /clients.hardness failed/.test(e.message),
    );
    assert.throws(
      () => createClientGate({ identity: 'ip', detection, hardness: 3 as never }, { defense, tiers: new Map(), metrics: createServingMetrics() }),
      /clients.hardness must be a function/,
    );
    await gate.close();
  });
});
