/**
 * The parts of the shared Redis fail apart: a fingerprint script or a population flush that fails
 * while the client updates go through logs one line where its outage starts and one where it ends,
 * and never starts or ends the client store's outage.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseDefense } from '../../../../src/defenses/index.js';
import { rng } from '../../../detection/synthetic.js';
import { waitFor } from '../../../helpers/wait.js';
import { aboveGate, confident } from '../../helpers/above-gate.js';
import { useRedisClient } from '../../helpers/redis-server.js';

const argmax = parseDefense('argmax');
const tiers = new Map([['argmax', argmax]]);

describe('outages of the shared Redis, per part', () => {
  const shared = useRedisClient();

  it('fingerprints and population counts failing, the client store working: one line each where it starts, one where it ends', async (t) => {
    const probe = shared.client;
    const { gate, logs, metrics, ask } = aboveGate(
      { store: { redis: shared.server.url, keyPrefix: 'parts:' }, fingerprints: {}, population: { flushMs: 10 } },
      { tiers },
    );
    t.after(() => gate.close());
    await gate.ready();
    const random = rng(7);
    const image = () => ({ rows: 1, cols: 784, data: Float32Array.from({ length: 784 }, () => (random() < 0.2 ? 0.9 : 0)) });
    const linesOf = (msg: string) => logs.lines.filter((l) => l.msg === msg).length;

    await ask('first', confident, {}, image());
    const partKeys = async () => [...(await probe.keys('parts:~fp:*')), ...(await probe.keys('parts:~pop:*'))];
    await waitFor(async () => (await probe.keys('parts:~pop:*')).length > 0, { what: 'the first population flush' });
    // A key of the wrong type: the fingerprint script and the population flush fail, the client updates do not.
    const broken = await partKeys();
    for (const key of broken) await probe.set(key, 'not a hash');

    for (let i = 0; i < 10; i++) {
      await ask(`client-${i}`, confident, {}, image());
      // Population flushes (every 10 ms) fail between the requests.
      await sleep(15);
    }
    const text = await metrics.registry.metrics();
    assert.match(text, /msd_client_store_errors_total\{store="redis",operation="fingerprints"\} 10\b/, 'every failure is counted');
    assert.match(text, /msd_client_store_errors_total\{store="redis",operation="population"\} [1-9]/);
    assert.equal(linesOf('client store unavailable'), 0, 'the client store never failed');
    assert.equal(linesOf('client store available again'), 0);
    assert.equal(linesOf('shared fingerprint store unavailable'), 1, 'one line where the fingerprints’ outage starts');
    assert.equal(linesOf('shared population counts unavailable'), 1, 'one line where the population counts’ outage starts');
    assert.equal(linesOf('shared fingerprint store available again'), 0);
    assert.equal(linesOf('shared population counts available again'), 0);

    // Redis takes the keys again: each part's outage ends with one line.
    await probe.del(...broken);
    await ask('after', confident, {}, image());
    await waitFor(() => linesOf('shared population counts available again') === 1, { what: 'a population flush to succeed again' });
    assert.equal(linesOf('shared fingerprint store available again'), 1);
    assert.equal(linesOf('shared fingerprint store unavailable'), 1);
    assert.equal(linesOf('shared population counts unavailable'), 1);
    assert.equal(linesOf('client store unavailable'), 0);
  });
});
