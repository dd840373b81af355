/** When the shared Redis attaches, the population counts and an alarm that holds go over to the tracker on Redis. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolvePopulationOptions } from '../../../../src/detection/above/population.js';
import type { ClientObservation } from '../../../../src/detection/types.js';
import { PopulationWatch } from '../../../../src/server/clients/above/population-watch.js';
import type { PopulationMetrics } from '../../../../src/server/clients/metrics.js';
import { createRedisStore } from '../../../../src/server/clients/store-redis.js';
import { createLogger } from '../../../../src/server/logger.js';
import { waitFor } from '../../../helpers/wait.js';
import { lineCollector } from '../../helpers/fixtures.js';
import { useRedisClient } from '../../helpers/redis-server.js';

const MINUTE = 60_000;
/** One 10-class answer with `confidence` on class 0. */
const answer = (confidence: number, time: number): ClientObservation => {
  const data = new Float32Array(10).fill((1 - confidence) / 9);
  data[0] = confidence;
  return { time, probs: { rows: 1, cols: 10, data } };
};

describe('population detection when Redis attaches', () => {
  const redis = useRedisClient();

  it('the window goes on with this process’s counts, and an alarm that holds goes on (no end, no second start) until it ends once', async (t) => {
    const logs = lineCollector();
    const alarms: unknown[] = [];
    const metrics = { alarms: { inc: (labels: unknown) => alarms.push(labels) } } as unknown as PopulationMetrics;
    const config = resolvePopulationOptions({ minQueries: 20, youngQueries: 100, classes: { enabled: false } });
    const watch = new PopulationWatch(config, { metrics, logger: createLogger({}, logs.stream), tier: 'argmax' });
    let time = 1_800_000_000_000;
    // A Sybil thief: 40 unsure young queries before Redis attaches.
    for (let i = 0; i < 40; i++) watch.observe(answer(0.3, time), false, 0, time++);
    assert.equal(watch.alarmed(), true);
    const startedBefore = logs.lines.filter((l) => String(l.msg).startsWith('population alarm started')).length;
    assert.ok(startedBefore >= 1);

    const store = await createRedisStore({ redis: redis.server.url, keyPrefix: 'handover:' });
    t.after(() => store.close());
    await store.ready();
    const errors: unknown[] = [];
    watch.attachRedis(store, { flushMs: 10, onError: (e) => errors.push(e), onSuccess: () => {}, now: () => time });

    assert.equal(watch.alarmed(), true, 'the alarm still holds');
    const overview = watch.overview();
    assert.equal(overview.views.young.alarm, true);
    assert.equal(overview.views.young.queries, 40, 'the window goes on: the 40 queries before the attach are counted');
    assert.equal(overview.views.all.queries, 40);
    assert.equal(logs.lines.filter((l) => l.msg === 'population alarm ended').length, 0, 'no end line: the alarm did not end');
    assert.equal(logs.lines.filter((l) => String(l.msg).startsWith('population alarm started')).length, startedBefore, 'nor a second start');
    assert.equal(alarms.length, startedBefore, 'nor a second count');

    // The counts from before the attach go to Redis with the next flush.
    const youngInRedis = async () => {
      let queries = 0;
      for (const key of await redis.client.keys('handover:~pop:10x0:young:*')) queries += Number((await redis.client.hget(key, '0')) ?? 0);
      return queries;
    };
    await waitFor(async () => (await youngInRedis()) === 40, { what: 'the 40 young queries to reach Redis', detail: youngInRedis });
    assert.equal(watch.overview().views.young.queries, 40, 'read back from Redis, counted once');

    // Older clients' confident traffic for the window plus the calm period: the alarm ends, once per view.
    for (let m = 0; m < 25; m++) {
      time += MINUTE;
      watch.observe(answer(0.99, time), false, 1000, time);
    }
    assert.equal(watch.alarmed(), false);
    const ended = logs.lines.filter((l) => l.msg === 'population alarm ended');
    assert.equal(ended.length, startedBefore, 'one end line per alarm that started');
    await watch.close();
    assert.deepEqual(errors, []);
  });

  it('an alarm the counts no longer flag (in its calm period) ends at the attach, with its line', async (t) => {
    const logs = lineCollector();
    const metrics = { alarms: { inc: () => {} } } as unknown as PopulationMetrics;
    const config = resolvePopulationOptions({ minQueries: 20, youngQueries: 100, classes: { enabled: false } });
    const watch = new PopulationWatch(config, { metrics, logger: createLogger({}, logs.stream), tier: 'argmax' });
    let time = 1_800_000_000_000;
    for (let i = 0; i < 40; i++) watch.observe(answer(0.3, time), false, 0, time++);
    // The unsure queries leave the window; the alarm holds through its calm period.
    for (let m = 0; m < 12; m++) {
      time += MINUTE;
      watch.observe(answer(0.99, time), false, 1000, time);
    }
    assert.equal(watch.alarmed(), true, 'still in the calm period');
    const store = await createRedisStore({ redis: redis.server.url, keyPrefix: 'calm:' });
    t.after(() => store.close());
    await store.ready();
    watch.attachRedis(store, { flushMs: 3_600_000, onError: () => {}, onSuccess: () => {}, now: () => time });
    assert.equal(watch.alarmed(), false);
    const started = logs.lines.filter((l) => String(l.msg).startsWith('population alarm started'));
    const ended = logs.lines.filter((l) => l.msg === 'population alarm ended');
    assert.deepEqual(ended.map((l) => l.view).sort(), started.map((l) => l.view).sort(), 'every alarm that started has its end line');
    await watch.close();
  });
});
