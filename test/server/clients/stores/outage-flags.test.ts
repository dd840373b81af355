import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import request from 'supertest';
import { startDefenseProxy } from '../../../../src/server/proxy.js';
import { countDetection, type CountPolicy } from '../../helpers/count-detection.js';
import { assertNoOriginalNumbers, kserveRequest } from '../../helpers/fixtures.js';
import { useStubAndRedis } from '../../helpers/stub-and-redis.js';

const PATH = '/v2/models/mnist/infer';
const ROUNDED = [0.71, 0.2, 0.09, 0.14, 0.64, 0.22];
const ARGMAX = [1, 0, 0, 0, 1, 0];
const dataOf = (body: { outputs: { data: number[] }[] }) => body.outputs[0].data;

type StubAndRedis = ReturnType<typeof useStubAndRedis>;

/** A proxy in fail mode "local" on the suite's Redis; resolves with a way to ask it as a client. */
async function startLocal(env: StubAndRedis, policy: CountPolicy, keyPrefix: string) {
  const proxy = await startDefenseProxy({
    upstream: env.upstream.url,
    defense: 'rounding:decimals=2',
    tiers: { argmax: 'argmax' },
    clients: {
      identity: 'header:x-api-key',
      detection: countDetection(policy),
      store: { redis: env.redis.url, keyPrefix, commandTimeoutMs: 2_000 },
      failMode: 'local',
    },
  });
  env.running.push(proxy);
  return (key: string) => request(proxy.url).post(PATH).set('x-api-key', key).send(kserveRequest());
}

describe('fail mode "local": what the shared store said of a client holds through a Redis outage', () => {
  const env = useStubAndRedis();
  const start = (policy: CountPolicy, keyPrefix: string) => startLocal(env, policy, keyPrefix);

  it('a refused client stays refused, a throttled one throttled, an escalated one escalated, once Redis is killed', async () => {
    const refusing = await start({ refuseAt: 2 }, 'refuse:');
    const throttling = await start({ throttleAt: 1, retryAfterSeconds: 600 }, 'throttle:');
    const escalating = await start({ escalateAt: 2, tier: 'argmax' }, 'escalate:');
    await refusing('key-refused-0001').expect(200);
    await refusing('key-refused-0001').expect(403);
    await refusing('key-refused-0001').expect(403);
    await throttling('key-throttled-1').expect(429);
    await escalating('key-escalated-1').expect(200);
    assert.deepEqual(dataOf((await escalating('key-escalated-1').expect(200)).body), ARGMAX);

    await env.redis.kill();
    const calls = env.upstream.requests.length;
    for (let i = 0; i < 3; i++) {
      const refused = await refusing('key-refused-0001').expect(403);
      assertNoOriginalNumbers(refused.text);
      const throttled = await throttling('key-throttled-1').expect(429);
      assert.ok(Number(throttled.headers['retry-after']) > 500, `Retry-After ${throttled.headers['retry-after']}`);
    }
    assert.equal(env.upstream.requests.length, calls, 'refused and throttled clients cost no model work during the outage');
    for (let i = 0; i < 2; i++) assert.deepEqual(dataOf((await escalating('key-escalated-1').expect(200)).body), ARGMAX, 'still escalated');
    // A client the store knew nothing of is served from local state, defended as usual.
    assert.deepEqual(dataOf((await escalating('key-clean-00001').expect(200)).body), ROUNDED);
  });
});

describe('fail mode "local": a paced client through a Redis outage', () => {
  const env = useStubAndRedis();

  it("a paced client stays paced through the outage: one answer (with its tier) per slot, on this process's slots", async () => {
    const pacing = await startLocal(env, { throttleAt: 1, retryAfterSeconds: 600, paced: true, tier: 'argmax' }, 'paced:');
    // The request that reaches the throttle takes the slot (Redis's): answered with the tier; the next one waits.
    assert.deepEqual(dataOf((await pacing('key-paced-00001').expect(200)).body), ARGMAX);
    assert.ok(Number((await pacing('key-paced-00001').expect(429)).headers['retry-after']) > 500);

    await env.redis.kill();
    const calls = env.upstream.requests.length;
    // This process's own slot is free: one answer, with the tier, never the original; then 429 again.
    const paced = await pacing('key-paced-00001').expect(200);
    assert.deepEqual(dataOf(paced.body), ARGMAX);
    for (let i = 0; i < 3; i++) {
      const throttled = await pacing('key-paced-00001').expect(429);
      assert.ok(Number(throttled.headers['retry-after']) > 500, `Retry-After ${throttled.headers['retry-after']}`);
      assertNoOriginalNumbers(throttled.text);
    }
    assert.equal(env.upstream.requests.length, calls + 1, 'one model call for the one paced answer');
  });
});
