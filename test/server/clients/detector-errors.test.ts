import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createClientDetection } from '../../../src/detection/index.js';
import type { ClientState } from '../../../src/detection/types.js';
import { createRedisStore } from '../../../src/server/clients/store-redis.js';
import { ClientStoreError } from '../../../src/server/clients/store.js';
import { createLogger } from '../../../src/server/logger.js';
import { startDefenseProxy, type ProxyOptions, type RunningProxy } from '../../../src/server/proxy.js';
import request from 'supertest';
import { assertNoOriginalNumbers, kserveRequest, lineCollector } from '../helpers/fixtures.js';
import { useStubAndRedis } from '../helpers/stub-and-redis.js';

const PATH = '/v2/models/mnist/infer';

/** The stub answers 2 rows whatever it is asked: a request of 1 row gets an answer that does not fit it. */
const oneRow = () => kserveRequest(1, 4);

const metricTotal = async (proxy: RunningProxy, name: string): Promise<number> => {
  const text = await proxy.proxy.metrics.registry.getSingleMetricAsString(name);
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
};

describe('a detector rejecting the answer is an answer error, not a store outage', () => {
  const env = useStubAndRedis();

  const start = async (clients: Partial<NonNullable<ProxyOptions['clients']>> = {}, onFailure: 'error' | 'argmax' = 'error') => {
    const logs = lineCollector();
    const proxy = await startDefenseProxy({
      upstream: env.upstream.url,
      defense: 'rounding:decimals=2',
      onFailure,
      logger: createLogger({ level: 'info' }, logs.stream),
      clients: { identity: 'header:x-api-key', detection: createClientDetection(), ...clients },
    });
    env.running.push(proxy);
    return { proxy, logs };
  };

  const checkAnswerError = async (proxy: RunningProxy, logs: ReturnType<typeof lineCollector>, key: string) => {
    const res = await request(proxy.url).post(PATH).set('x-api-key', key).send(oneRow()).expect(502);
    assert.match(res.body.error, /model answer: 2 rows for 1 input rows/);
    assertNoOriginalNumbers(res.text);
    assert.equal(await metricTotal(proxy, 'msd_client_store_errors_total'), 0, 'no store error counted');
    assert.equal(await metricTotal(proxy, 'msd_client_store_fallback_total'), 0, 'no fallback to local state');
    assert.ok(!logs.lines.some((l) => l.msg === 'client store unavailable'), 'no false outage log line');
    assert.equal(await metricTotal(proxy, 'msd_requests_total'), 1);
    assert.match(await proxy.proxy.metrics.registry.getSingleMetricAsString('msd_requests_total'), /outcome="bad_answer"\} 1/);
  };

  it('memory store: 502, the answer withheld', async () => {
    const { proxy, logs } = await start();
    await checkAnswerError(proxy, logs, 'key-memory-0001');
  });

  it('Redis store, fail mode "refuse": 502 (not 503 "store unavailable"), no outage counted or logged', async () => {
    const { proxy, logs } = await start({ store: { redis: env.redis.url, keyPrefix: 'mismatch:' }, failMode: 'refuse' });
    await checkAnswerError(proxy, logs, 'key-redis-0001');
  });

  it('Redis store, fail mode "local": 502, never the original probabilities, even with onFailure argmax', async () => {
    const { proxy, logs } = await start({ store: { redis: env.redis.url, keyPrefix: 'mismatch-local:' }, failMode: 'local' }, 'argmax');
    await checkAnswerError(proxy, logs, 'key-redis-0002');
  });

  it('the Redis store passes an error of the update function on as it is (no ClientStoreError)', async (t) => {
    const store = await createRedisStore({ redis: env.redis.url, keyPrefix: 'fn-error:' });
    t.after(() => store.close());
    await store.ready();
    class DetectorSaysNo extends Error {}
    await assert.rejects(
      store.update('c1', (): { state: ClientState; result: undefined } => {
        throw new DetectorSaysNo('no');
      }),
      (e: Error) => e instanceof DetectorSaysNo && !(e instanceof ClientStoreError),
    );
  });
});
