/** Population counts per layout: answers with another number of classes (another model) are counted apart. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { resolvePopulationOptions, summarise, type PopulationOptions } from '../../../../src/detection/above/population.js';
import type { ClientObservation } from '../../../../src/detection/types.js';
import type { PopulationMetrics } from '../../../../src/server/clients/metrics.js';
import { createPopulationTracker, MAX_LAYOUTS } from '../../../../src/server/clients/above/population.js';
import { PopulationWatch } from '../../../../src/server/clients/above/population-watch.js';
import { createLogger } from '../../../../src/server/logger.js';
import { lineCollector } from '../../helpers/fixtures.js';
import { startRedis, type TestRedis } from '../../helpers/redis-server.js';

/** One row of `classes` classes, `confidence` on class 0 and the rest spread evenly. */
const rows = (classes: number, confidence: number, n = 1) => {
  const data = new Float32Array(n * classes).fill((1 - confidence) / (classes - 1));
  for (let r = 0; r < n; r++) data[r * classes] = confidence;
  return { rows: n, cols: classes, data };
};
const observation = (classes: number, confidence: number, time: number): ClientObservation => ({ time, probs: rows(classes, confidence) });

function watch(options: PopulationOptions) {
  const logs = lineCollector();
  const alarms: unknown[] = [];
  const metrics = { alarms: { inc: (labels: unknown) => alarms.push(labels) } } as unknown as PopulationMetrics;
  return { watch: new PopulationWatch(resolvePopulationOptions(options), { metrics, logger: createLogger({}, logs.stream) }), logs, alarms };
}

describe('population layouts', () => {
  it('memory: a query to a model with another number of classes neither resets nor hides the unsure traffic', () => {
    const { watch: w, logs, alarms } = watch({ minQueries: 50 });
    let time = 1000;
    // Older clients (the `all` view only): 195 unsure 10-class answers, a confident 2-class one every 40.
    for (let i = 0; i < 200; i++) w.observe(i % 40 === 39 ? observation(2, 0.99, time) : observation(10, 0.3, time), false, 1000, time++);
    assert.equal(w.alarmed(), true);
    const overview = w.overview();
    assert.equal(overview.views.all.alarm, true);
    assert.equal(overview.views.all.queries, 195, 'the view shown is the alarmed layout’s');
    assert.deepEqual(
      overview.layouts.map((l) => [l.classes, l.bins, l.views.all.queries, l.views.all.alarm]),
      [
        [10, 0, 195, true],
        [2, 0, 5, false],
      ],
    );
    const started = logs.lines.filter((l) => String(l.msg).startsWith('population alarm started'));
    assert.deepEqual(
      started.map((l) => l.classes),
      [10],
    );
    assert.deepEqual(alarms, [{ view: 'all' }]);
    assert.equal(w.gauges().all.alarm, true, 'the gauges show the alarmed layout');
  });

  it('a classes reference judges only the layout with its number of classes', () => {
    const { watch: w } = watch({ minQueries: 20, ood: { enabled: false }, classes: { reference: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1] } });
    for (let i = 0; i < 30; i++) {
      w.observe(observation(10, 0.9, i), false, 0, i);
      w.observe(observation(2, 0.9, i), false, 0, i);
    }
    const detectors = Object.fromEntries(w.overview().layouts.map((l) => [l.classes, l.views.all.verdicts.map((v) => v.detector)]));
    assert.ok(detectors[10].includes('classes'));
    assert.ok(!detectors[2].includes('classes'), 'a 2-class model is not judged against a 10-class reference');
    assert.equal(w.alarmed(), true, 'the 10-class traffic, all on class 0, is far from its reference');
  });

  it(`the layout past ${MAX_LAYOUTS} is not counted, with one warning`, () => {
    const { watch: w, logs } = watch({ minQueries: 50 });
    for (let k = 2; k < 2 + MAX_LAYOUTS; k++) w.observe(observation(k, 0.9, k), false, 0, k);
    for (let i = 0; i < 5; i++) {
      w.observe(observation(100, 0.9, 100 + i), false, 0, 100 + i);
      w.observe(observation(101, 0.9, 100 + i), false, 0, 100 + i);
    }
    w.observe(observation(2, 0.9, 200), false, 0, 200);
    const layouts = w.overview().layouts;
    assert.equal(layouts.length, MAX_LAYOUTS);
    assert.ok(!layouts.some((l) => l.classes >= 100));
    assert.equal(layouts.find((l) => l.classes === 2)?.views.all.queries, 2, 'a layout already counted still is');
    const warned = logs.lines.filter((l) => l.level === 40);
    assert.equal(warned.length, 1, JSON.stringify(warned));
    assert.equal(warned[0].classes, 100);
    assert.match(String(warned[0].msg), /at most 16 numbers of classes/);
  });
});

describe('population layouts in Redis', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.stop());

  it('each layout has its own keys and counts, read back as such by another replica', async (t) => {
    const config = resolvePopulationOptions({
      minQueries: 20,
      classes: { enabled: false },
      hoda: { reference: [1, 1, 1], maxDistance: 0.5 },
      window: { lengthMs: 60_000, bucketMs: 10_000 },
    });
    const clients = [new Redis(redis.url), new Redis(redis.url)];
    t.after(() => {
      for (const c of clients) c.disconnect();
    });
    const time = 5_000_000;
    const errors: unknown[] = [];
    const [a, b] = clients.map((redisClient) =>
      createPopulationTracker(config, {
        redis: redisClient,
        prefix: 'lay:',
        flushMs: 60_000,
        onError: (e) => errors.push(e),
        onSuccess: () => {},
        now: () => time,
      }),
    );
    const ten = a.layoutFor(10)!;
    const two = a.layoutFor(2)!;
    assert.deepEqual(
      [ten, two],
      [
        { classes: 10, bins: 3 },
        { classes: 2, bins: 3 },
      ],
    );
    // 30 unsure queries to the 10-class model, 7 confident ones to the 2-class one.
    a.observe(summarise(ten, 0.7, rows(10, 0.3, 30)), true, time);
    a.observe(summarise(two, 0.7, rows(2, 0.99, 7)), false, time);
    await a.flush(time);
    assert.deepEqual(errors, []);
    assert.deepEqual((await clients[0].keys('lay:~pop:*')).sort(), [`lay:~pop:10x3:all:${time}`, `lay:~pop:10x3:young:${time}`, `lay:~pop:2x3:all:${time}`]);
    assert.equal(await clients[0].hget(`lay:~pop:10x3:all:${time}`, '0'), '30');
    assert.equal(await clients[0].hget(`lay:~pop:2x3:all:${time}`, '0'), '7');

    // Another replica, which has seen both models, reads each layout's own counts.
    b.layoutFor(2);
    b.layoutFor(10);
    await b.flush(time);
    assert.deepEqual(errors, []);
    assert.deepEqual(
      b.judge(time).map((c) => [c.layout.classes, c.view, c.started]),
      [
        [10, 'all', true],
        [10, 'young', true],
      ],
    );
    assert.deepEqual(
      b.layouts().map((l) => [l.classes, l.views.all.queries, l.views.young.queries, l.views.all.alarm]),
      [
        [2, 7, 0, false],
        [10, 30, 30, true],
      ],
    );
    assert.equal(b.alarm('all'), true);
    await a.close();
    await b.close();
  });
});
