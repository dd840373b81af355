import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import request from 'supertest';
import { createClientDetection } from '../../../src/detection/index.js';
import { createLogger } from '../../../src/server/logger.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { startDefenseProxy, type ProxyOptions, type RunningProxy } from '../../../src/server/proxy.js';
import { countDetection } from '../helpers/count-detection.js';
import { assertNoOriginalNumbers, contextEchoDefense, kserveAnswer, kserveRequest, lineCollector, uniformSurrogate } from '../helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

const PATH = '/v2/models/mnist/infer';
const ADMIN = 'admin-token-0123456789';

/**
 * A KServe V2 request the model server reads (it knows its own input) but the proxy cannot: a second,
 * dummy input tensor and no inputName configured. The dummy's values are distinctive, to find them in logs.
 */
const twoInputs = () => ({
  inputs: [...kserveRequest(1, 4).inputs, { name: 'dummy', shape: [1, 2], datatype: 'FP32', data: [0.8675309, 0.4242424] }],
});

const unreadableCount = async (registry: { getSingleMetricAsString(name: string): Promise<string> }) => {
  const line = (await registry.getSingleMetricAsString('msd_client_unreadable_inputs_total'))
    .split('\n')
    .find((l) => l.startsWith('msd_client_unreadable_inputs_total'));
  return Number(line?.split(' ').pop());
};

describe('detectors that need the inputs never go blind silently', () => {
  let upstream: StubUpstream;
  const running: RunningProxy[] = [];
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
  });
  after(async () => {
    for (const proxy of running) await proxy.close();
    await upstream?.close();
  });

  const start = async (clients: Partial<NonNullable<ProxyOptions['clients']>> = {}) => {
    const logs = lineCollector();
    const proxy = await startDefenseProxy({
      upstream: upstream.url,
      defense: 'rounding:decimals=2',
      logger: createLogger({ level: 'info' }, logs.stream),
      clients: { identity: 'header:x-api-key', detection: createClientDetection(), admin: { token: ADMIN }, ...clients },
    });
    running.push(proxy);
    return { proxy, logs };
  };

  it('proxy: refuses (400, saying why and what to configure) a request whose inputs PRADA cannot read, before the upstream works on it', async () => {
    const { proxy, logs } = await start();
    const calls = upstream.requests.length;
    const res = await request(proxy.url).post(PATH).set('x-api-key', 'key-mallory-01').send(twoInputs()).expect(400);
    assert.match(res.headers['content-type'], /json/);
    assert.match(res.body.error, /client detection needs this request's model inputs/);
    assert.match(res.body.error, /inputName/);
    assertNoOriginalNumbers(res.text);
    assert.equal(upstream.requests.length, calls, 'nothing was forwarded');
    assert.equal(await unreadableCount(proxy.proxy.metrics.registry), 1);
    const line = logs.lines.find((l) => typeof l.msg === 'string' && /client detection cannot read its inputs/.test(l.msg as string));
    assert.ok(line, 'a log line says why');
    assert.ok(!logs.raw.join('').includes('8675309'), 'no body content in the logs');
    assert.ok(!JSON.stringify(line).includes('dummy'), 'not even tensor names in the refusal line');
    // PRADA saw nothing, and nothing was recorded as if observed.
    const admin = await request(proxy.url).get('/admin/clients').set('authorization', `Bearer ${ADMIN}`).expect(200);
    assert.deepEqual(admin.body.clients, []);
    // A readable request of the same client is served and observed.
    await request(proxy.url).post(PATH).set('x-api-key', 'key-mallory-01').send(kserveRequest(2, 4)).expect(200);
    const seen = await request(proxy.url).get('/admin/clients').set('authorization', `Bearer ${ADMIN}`).expect(200);
    assert.equal(seen.body.clients[0].verdicts.find((v: { detector: string }) => v.detector === 'prada').evidence.queries, 2);
  });

  it('proxy: serves such a request when no detector needs the inputs (PRADA off, or observeInputs false)', async () => {
    const { proxy: noPrada } = await start({ detection: createClientDetection({ prada: { enabled: false } }) });
    await request(noPrada.url).post(PATH).set('x-api-key', 'key-mallory-01').send(twoInputs()).expect(200);
    const { proxy: noInputs } = await start({ observeInputs: false });
    await request(noInputs.url).post(PATH).set('x-api-key', 'key-mallory-01').send(twoInputs()).expect(200);
    assert.equal(await unreadableCount(noPrada.proxy.metrics.registry), 0);
  });

  it('middleware: refuses it (400) before the route runs, and counts it', async () => {
    const logs = lineCollector();
    const guard = poisonPredictions({
      defense: 'rounding:decimals=2',
      logger: createLogger({ level: 'info' }, logs.stream),
      clients: { identity: 'header:x-api-key', detection: createClientDetection() },
    });
    let routeCalls = 0;
    const app = express();
    app.use(express.json());
    app.post(PATH, guard, (_req, res) => {
      routeCalls++;
      res.json(kserveAnswer([[0.7123457, 0.2034567, 0.0841976]]));
    });
    const res = await request(app).post(PATH).set('x-api-key', 'key-mallory-01').send(twoInputs()).expect(400);
    assert.match(res.body.error, /inputName/);
    assertNoOriginalNumbers(res.text);
    assert.equal(routeCalls, 0, 'the route (model work) did not run');
    assert.equal(await unreadableCount(guard.metrics.registry), 1);
    assert.ok(!logs.raw.join('').includes('8675309'));
    await request(app).post(PATH).set('x-api-key', 'key-mallory-01').send(kserveRequest(1, 4)).expect(200);
    assert.equal(routeCalls, 1);
    await guard.clients!.close();
  });

  // The gate does not require the inputs (observeInputs false), so an unreadable request is served until
  // its client is escalated to a tier whose surrogate needs them: then it is the client's fault, a 400.
  it('proxy: an escalation tier that needs inputs it cannot read answers 400 saying why, never 500 nor the answer', async () => {
    const surrogate = uniformSurrogate(3);
    const proxy = await startDefenseProxy({
      upstream: upstream.url,
      defense: 'rounding:decimals=2',
      tiers: { echo: contextEchoDefense() },
      context: surrogate.provider,
      clients: { identity: 'header:x-api-key', detection: countDetection({ escalateAt: 1, tier: 'echo' }), observeInputs: false },
    });
    running.push(proxy);
    const res = await request(proxy.url).post(PATH).set('x-api-key', 'key-ivan-0009').send(twoInputs());
    assert.equal(res.status, 400, res.text);
    assert.match(res.body.error, /inputs/);
    assert.match(res.body.error, /inputName/);
    assertNoOriginalNumbers(res.text);
    assert.deepEqual(surrogate.calls, []);
    // Refused as the gate refuses unreadable inputs: counted (and logged) like them.
    assert.equal(await unreadableCount(proxy.proxy.metrics.registry), 1);
    // The same client's readable request is served by the tier.
    await request(proxy.url).post(PATH).set('x-api-key', 'key-ivan-0009').send(kserveRequest()).expect(200);
    assert.deepEqual(surrogate.calls, [{ rows: 2, cols: 4 }]);
  });

  it('middleware: the same request answers 400 too', async () => {
    const surrogate = uniformSurrogate(3);
    const guard = poisonPredictions({
      defense: 'rounding:decimals=2',
      tiers: { echo: contextEchoDefense() },
      context: surrogate.provider,
      clients: { identity: 'header:x-api-key', detection: countDetection({ escalateAt: 1, tier: 'echo' }), observeInputs: false },
    });
    const app = express();
    app.use(express.json());
    app.post(PATH, guard, (_req, res) => void res.json(kserveAnswer([[0.7123457, 0.2034567, 0.0841976]])));
    const res = await request(app).post(PATH).set('x-api-key', 'key-ivan-0009').send(twoInputs());
    assert.equal(res.status, 400, res.text);
    assert.match(res.body.error, /inputName/);
    assertNoOriginalNumbers(res.text);
    assert.deepEqual(surrogate.calls, []);
    await guard.clients!.close();
  });
});
