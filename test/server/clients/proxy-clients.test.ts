import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import request from 'supertest';
import { createLogger } from '../../../src/server/logger.js';
import { startDefenseProxy, type ProxyOptions, type RunningProxy } from '../../../src/server/proxy.js';
import { countDetection, type CountPolicy } from '../helpers/count-detection.js';
import { assertNoOriginalNumbers, contextEchoDefense, kserveRequest, lineCollector, uniformSurrogate } from '../helpers/fixtures.js';
import { startRedis, type TestRedis } from '../helpers/redis-server.js';
import { useStubAndRedis } from '../helpers/stub-and-redis.js';
import { waitFor } from '../../helpers/wait.js';

const PATH = '/v2/models/mnist/infer';
const ROUNDED = [0.71, 0.2, 0.09, 0.14, 0.64, 0.22];
const ARGMAX = [1, 0, 0, 0, 1, 0];
const dataOf = (body: { outputs: { data: number[] }[] }) => body.outputs[0].data;

describe('client detection through the proxy', () => {
  const env = useStubAndRedis();

  const start = async (policy: CountPolicy, clients: Partial<NonNullable<ProxyOptions['clients']>> = {}) => {
    const logs = lineCollector();
    const proxy = await startDefenseProxy({
      upstream: env.upstream.url,
      defense: 'rounding:decimals=2',
      tiers: { argmax: 'argmax' },
      logger: createLogger({ level: 'info' }, logs.stream),
      clients: { identity: 'header:x-api-key', detection: countDetection(policy), ...clients },
    });
    env.running.push(proxy);
    return { proxy, logs };
  };
  const ask = (proxy: RunningProxy, key: string) => request(proxy.url).post(PATH).set('x-api-key', key).send(kserveRequest());

  it('refuses (403) and throttles (429 + Retry-After) without calling the upstream', async () => {
    const { proxy } = await start({ throttleAt: 2, refuseAt: 4, retryAfterSeconds: 9 });
    await ask(proxy, 'key-carol-0003').expect(200);
    await ask(proxy, 'key-carol-0003').expect(429);
    const calls = env.upstream.requests.length;
    const throttled = await ask(proxy, 'key-carol-0003').expect(429);
    assert.equal(throttled.headers['retry-after'], '9');
    assert.equal(env.upstream.requests.length, calls, 'the upstream was not called');
    assertNoOriginalNumbers(throttled.text);
  });

  it('two proxies on one Redis see one history: a client alternating between them is escalated as early as with one', async () => {
    const key = `key-dave-${Date.now()}`;
    const store = { redis: env.redis.url, keyPrefix: 'two:' };
    const { proxy: a } = await start({ escalateAt: 4, tier: 'argmax' }, { store });
    const { proxy: b } = await start({ escalateAt: 4, tier: 'argmax' }, { store });
    const answers: number[][] = [];
    for (let i = 0; i < 6; i++) answers.push(dataOf((await ask(i % 2 ? b : a, key).expect(200)).body));
    assert.deepEqual(answers, [ROUNDED, ROUNDED, ROUNDED, ARGMAX, ARGMAX, ARGMAX]);
    // And without the shared store, each replica alone would have seen only 3 queries.
    const { proxy: c } = await start({ escalateAt: 4, tier: 'argmax' });
    const { proxy: d } = await start({ escalateAt: 4, tier: 'argmax' });
    const apart: number[][] = [];
    for (let i = 0; i < 6; i++) apart.push(dataOf((await ask(i % 2 ? d : c, key).expect(200)).body));
    assert.deepEqual(apart, Array(6).fill(ROUNDED));
  });

  it('counts N parallel requests of one client across two proxies exactly', async () => {
    const key = `key-erin-${Date.now()}`;
    const store = { redis: env.redis.url, keyPrefix: 'par:' };
    const { proxy: a } = await start({}, { store, admin: { token: 'admin-token-0123456789' } });
    const { proxy: b } = await start({}, { store });
    await Promise.all(Array.from({ length: 30 }, (_, i) => ask(i % 2 ? b : a, key).expect(200)));
    const res = await request(a.url).get('/admin/clients').set('authorization', 'Bearer admin-token-0123456789').expect(200);
    assert.equal(res.body.store, 'redis');
    assert.equal(res.body.clients[0].verdicts[0].evidence.queries, 30);
    await request(b.url).get('/admin/clients').set('authorization', 'Bearer admin-token-0123456789').expect(404);
  });

  it('escalates to a tier that needs the inputs (a surrogate) even when the detectors are not given them', async () => {
    const surrogate = uniformSurrogate(3);
    const proxy = await startDefenseProxy({
      upstream: env.upstream.url,
      defense: 'rounding:decimals=2',
      tiers: { echo: contextEchoDefense() },
      context: surrogate.provider,
      clients: { identity: 'header:x-api-key', detection: countDetection({ escalateAt: 2, tier: 'echo' }), observeInputs: false },
    });
    env.running.push(proxy);
    assert.deepEqual(dataOf((await ask(proxy, 'key-gina-0007').expect(200)).body), ROUNDED);
    const escalated = await ask(proxy, 'key-gina-0007').expect(200);
    assert.deepEqual(
      dataOf(escalated.body).map((v) => Math.round(v * 1000) / 1000),
      Array(6).fill(0.333),
    );
    assert.deepEqual(surrogate.calls, [{ rows: 2, cols: 4 }]);
  });

  it('logs no raw client id: the identity header is redacted from request lines, change lines carry the hash', async () => {
    const { proxy, logs } = await start({ escalateAt: 1, tier: 'argmax' }, { identity: 'header:x-client-key' });
    await request(proxy.url).post(PATH).set('x-client-key', 'raw-key-zulu-99').send(kserveRequest()).expect(200);
    // Both lines are written as the answer goes out: the change line, and the request line (with the redacted header).
    await waitFor(() => logs.lines.some((l) => l.msg === 'client action changed') && logs.raw.join('').includes('[redacted]'), {
      what: 'the "client action changed" line and the request line',
      timeoutMs: 5000,
      detail: () => logs.raw.join(''),
    });
    assert.ok(logs.raw.join('').includes('[redacted]'));
    assert.ok(!logs.raw.join('').includes('raw-key-zulu-99'));
  });

  it('when Redis goes away: "local" answers defended (never raw) and counts the outage; "refuse" answers 503', async () => {
    const outage = await startRedis();
    try {
      const store = { redis: outage.url, commandTimeoutMs: 2_000 };
      const { proxy: local, logs } = await start({ escalateAt: 100 }, { store, failMode: 'local' });
      const { proxy: strict } = await start({}, { store, failMode: 'refuse' });
      await ask(local, 'key-frank-0006').expect(200);
      await ask(strict, 'key-frank-0006').expect(200);
      await outage.kill();
      for (let i = 0; i < 3; i++) {
        const res = await ask(local, 'key-frank-0006').expect(200);
        assert.deepEqual(dataOf(res.body), ROUNDED);
        assertNoOriginalNumbers(res.text);
      }
      const refused = await ask(strict, 'key-frank-0006').expect(503);
      assert.equal(refused.headers['retry-after'], '5');
      assertNoOriginalNumbers(refused.text);
      const metrics = await local.proxy.metrics.registry.metrics();
      assert.match(metrics, /msd_client_store_errors_total\{store="redis",operation="read"\} [1-9]/);
      assert.match(metrics, /msd_client_store_fallback_total [1-9]/);
      assert.ok(logs.lines.some((l) => l.msg === 'client store unavailable'));
    } finally {
      await outage.stop();
    }
  });

  it('goes back to the shared store once Redis is back', async () => {
    const first = await startRedis();
    let second: TestRedis | undefined;
    try {
      const { proxy, logs } = await start({}, { store: { redis: first.url, commandTimeoutMs: 2_000 }, failMode: 'local' });
      await ask(proxy, 'key-hank-0008').expect(200);
      await first.kill();
      await ask(proxy, 'key-hank-0008').expect(200);
      second = await startRedis(first.port);
      // ioredis reconnects on its own, with a backoff; requests meanwhile are served from local state.
      await waitFor(
        async () => {
          if (logs.lines.some((l) => l.msg === 'client store available again')) return true;
          await ask(proxy, 'key-hank-0008').expect(200);
          return false;
        },
        {
          what: 'the proxy to log "client store available again" once Redis is back',
          timeoutMs: 20_000,
          intervalMs: 100,
          detail: () => logs.lines.map((l) => l.msg).join(' | '),
        },
      );
      const fallbacks = (await proxy.proxy.metrics.registry.getSingleMetric('msd_client_store_fallback_total')!.get()).values[0].value;
      await ask(proxy, 'key-hank-0008').expect(200);
      assert.equal(
        (await proxy.proxy.metrics.registry.getSingleMetric('msd_client_store_fallback_total')!.get()).values[0].value,
        fallbacks,
        'no fallback once Redis is back',
      );
    } finally {
      await first.stop();
      await second?.stop();
    }
  });
});
