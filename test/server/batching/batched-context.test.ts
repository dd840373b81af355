import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import request from 'supertest';
import { asyncSurrogate, createModel, initBackend, Surrogate, tf } from '../../../src/models/index.js';
import { buildDemoApp } from '../../../src/demo/app.js';
import { batchedSurrogateContext, type AsyncProbabilityModel, type BatchedContextProvider } from '../../../src/server/batching/batched-context.js';
import { ServingOptionError } from '../../../src/server/errors.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import type { BatchingOptions } from '../../../src/server/batching/options.js';
import { startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';
import { assertNoOriginalNumbers, contextEchoDefense, kserveAnswer, kserveRequest } from '../helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';
import { waitFor } from '../../helpers/wait.js';

const CLASSES = 3;
const FEATURES = 4;

/** A fake surrogate: deterministic probabilities per row, its forward passes counted; `hold()` makes passes wait until released. */
function fakeSurrogate(options: { fail?: boolean } = {}) {
  const passes: number[] = [];
  let gate: Promise<void> | undefined;
  let open: () => void = () => {};
  const model: AsyncProbabilityModel = {
    classes: CLASSES,
    inputShape: [FEATURES],
    async probsAsync(inputs, rows) {
      passes.push(rows);
      if (gate) await gate;
      if (options.fail) throw new Error('surrogate out of memory');
      const data = new Float32Array(rows * CLASSES);
      for (let r = 0; r < rows; r++) {
        const s = inputs[r * FEATURES] + 1;
        const z = [s, 2 * s, 1].map(Math.exp);
        const total = z[0] + z[1] + z[2];
        for (let k = 0; k < CLASSES; k++) data[r * CLASSES + k] = z[k] / total;
      }
      return { rows, cols: CLASSES, data };
    },
  };
  return {
    model,
    passes,
    hold: () => {
      gate = new Promise((resolve) => (open = resolve));
    },
    release: () => {
      gate = undefined;
      open();
    },
  };
}

function appWith(context: BatchedContextProvider, onFailure: 'error' | 'argmax' = 'error') {
  const app = express();
  app.use(express.json());
  const guard = poisonPredictions({ defense: contextEchoDefense(), context, onFailure });
  app.post('/v2/models/mnist/infer', guard, (_req, res) => {
    routeCalled++;
    res.json(kserveAnswer());
  });
  app.get('/metrics', guard.metricsHandler);
  return app;
}

let routeCalled = 0;

/** Whether one more row would be refused now. */
const queueFull = (context: BatchedContextProvider): boolean => {
  try {
    context.admit(1);
    return false;
  } catch {
    return true;
  }
};

describe('batched surrogate context, mount mode', () => {
  let server: Server;
  const contexts: BatchedContextProvider[] = [];
  const serve = (context: BatchedContextProvider, onFailure?: 'error' | 'argmax') => {
    contexts.push(context);
    server = appWith(context, onFailure).listen(0, '127.0.0.1');
    return server;
  };
  const newContext = (model: AsyncProbabilityModel, options: BatchingOptions) => {
    const context = batchedSurrogateContext({ surrogate: model }, options);
    contexts.push(context);
    return context;
  };
  after(async () => {
    server?.close();
    await Promise.all(contexts.map((c) => c.close()));
  });

  it('concurrent requests share one forward pass, and each gets its own rows', async () => {
    const fake = fakeSurrogate();
    const app = appWith(newContext(fake.model, { windowMs: 50 }));
    const bodies = [0, 1, 2].map((shift) => ({
      inputs: [{ name: 'image', shape: [2, FEATURES], datatype: 'FP32', data: Array.from({ length: 2 * FEATURES }, (_, i) => i + shift) }],
    }));
    const answers = await Promise.all(bodies.map((body) => request(app).post('/v2/models/mnist/infer').send(body).expect(200)));
    assert.deepEqual(fake.passes, [6]);
    for (const [i, res] of answers.entries()) {
      const alone = await fake.model.probsAsync(Float32Array.from(bodies[i].inputs[0].data), 2);
      // Answers are written as shortest float32 decimals: equal once read back as float32.
      assert.deepEqual(Float32Array.from(res.body.outputs[0].data), alone.data);
      assertNoOriginalNumbers(res.text);
    }
  });

  it('answers 503 with Retry-After when the queue is full, even with the argmax fallback', async () => {
    const fake = fakeSurrogate();
    fake.hold();
    const context = newContext(fake.model, { windowMs: 0, maxBatchRows: 2, maxQueueRows: 2, maxRowsPerRequest: 2 });
    const app = serve(context, 'argmax');
    const first = request(app)
      .post('/v2/models/mnist/infer')
      .send(kserveRequest())
      .then((r) => r);
    await waitFor(() => fake.passes.length === 1, { what: 'the first request’s forward pass', timeoutMs: 5000 }); // computing, so its rows left the queue
    const second = request(app)
      .post('/v2/models/mnist/infer')
      .send(kserveRequest())
      .then((r) => r);
    await waitFor(() => queueFull(context), { what: 'the second request to fill the queue', timeoutMs: 5000 }); // the second one waits
    const routeCalls = routeCalled;
    const refused = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(503);
    assert.equal(routeCalled, routeCalls, 'refused before the route ran');
    assert.match(refused.headers['retry-after'], /^[1-9]\d*$/);
    assert.match(refused.body.error, /busy/);
    assertNoOriginalNumbers(refused.text);
    fake.release();
    assert.equal((await first).status, 200);
    assert.equal((await second).status, 200);
    const metrics = await request(app).get('/metrics').expect(200);
    assert.match(metrics.text, /msd_requests_total\{defense="echo-surrogate",outcome="overloaded"\} 1/);
  });

  it('refuses a request over maxRowsPerRequest with 413 before any surrogate work', async () => {
    const fake = fakeSurrogate();
    const app = appWith(newContext(fake.model, { maxRowsPerRequest: 1 }));
    const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(413);
    assert.match(res.body.error, /at most 1 per request/);
    assert.deepEqual(fake.passes, []);
    assertNoOriginalNumbers(res.text);
  });

  it('fails closed when the surrogate throws: no original probabilities in the body', async () => {
    const fake = fakeSurrogate({ fail: true });
    const app = appWith(newContext(fake.model, { windowMs: 1 }));
    const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(500);
    assert.match(res.body.error, /withheld/);
    assertNoOriginalNumbers(res.text);
  });

  it('exposes batch sizes, queue wait and the event-loop delay on the instance registry', async () => {
    const fake = fakeSurrogate();
    const app = appWith(newContext(fake.model, { windowMs: 1, maxBatchRows: 8 }));
    await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
    const { text } = await request(app).get('/metrics').expect(200);
    assert.match(text, /msd_surrogate_batch_rows_bucket\{le="2",model="surrogate"\} 1/);
    assert.match(text, /msd_surrogate_batch_rows_bucket\{le="8",model="surrogate"\} 1/);
    assert.match(text, /msd_surrogate_queue_wait_seconds_count\{model="surrogate"\} 1/);
    assert.match(text, /msd_surrogate_queue_rows\{model="surrogate"\} 0/);
    assert.match(text, /msd_nodejs_eventloop_lag_p99_seconds /);
  });

  it('batches the misinformation model on its own, computes input keys, and says when Gram matrices are unavailable', async () => {
    const surrogate = fakeSurrogate();
    const misinformation = fakeSurrogate();
    const context = newContext(surrogate.model, {});
    const both = batchedSurrogateContext({ surrogate: surrogate.model, misinformation: misinformation.model }, { windowMs: 1 });
    contexts.push(both);
    const data = Float32Array.from({ length: 2 * FEATURES }, (_, i) => i);
    const got = await both(['misinformation', 'inputKey', 'surrogate'], { rows: 2, cols: FEATURES, data });
    assert.deepEqual(got.misinformationProbs!.data, (await misinformation.model.probsAsync(data, 2)).data);
    assert.deepEqual(got.surrogateProbs!.data, (await surrogate.model.probsAsync(data, 2)).data);
    assert.equal(got.inputKeys!.length, 2);
    assert.notEqual(got.inputKeys![0], got.inputKeys![1]);
    await assert.rejects(context(['surrogateGram'], { rows: 2, cols: FEATURES, data }), /forward-only/);
    await assert.rejects(context(['misinformation'], { rows: 2, cols: FEATURES, data }), /no misinformation model|none was configured/);
    await assert.rejects(context(['surrogate'], { rows: 1, cols: FEATURES + 1, data: new Float32Array(FEATURES + 1) }), /takes 4/);
    await assert.rejects(context(['surrogate'], { rows: 1, cols: FEATURES, data: Float32Array.of(0, NaN, 0, 0) }), /non-finite/);
  });

  it('refuses a model without probsAsync and bad batching options at construction', () => {
    assert.throws(() => batchedSurrogateContext({ surrogate: {} as AsyncProbabilityModel }), /asyncSurrogate/);
    assert.throws(() => batchedSurrogateContext({ surrogate: fakeSurrogate().model }, { maxQueueRows: 0 }), ServingOptionError);
  });
});

describe('batched surrogate context, proxy mode', () => {
  let upstream: StubUpstream;
  let proxy: RunningProxy;
  const fake = fakeSurrogate();
  const context = batchedSurrogateContext({ surrogate: fake.model }, { windowMs: 0, maxBatchRows: 2, maxQueueRows: 2, maxRowsPerRequest: 2 });
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
    proxy = await startDefenseProxy({ upstream: upstream.url, defense: contextEchoDefense(), context });
  });
  after(async () => {
    fake.release();
    await context.close();
    await proxy.close();
    await upstream.close();
  });
  const infer = (rows: number) => request(proxy.url).post('/v2/models/mnist/infer').send(kserveRequest(rows, FEATURES));

  it('defends through the batcher', async () => {
    const res = await infer(2).expect(200);
    assert.equal(res.body.outputs[0].data.length, 2 * CLASSES);
    assertNoOriginalNumbers(res.text);
  });

  it('refuses over maxRowsPerRequest with 413 before forwarding', async () => {
    const forwarded = upstream.requests.length;
    const res = await infer(3).expect(413);
    assert.match(res.body.error, /at most 2 per request/);
    assert.equal(upstream.requests.length, forwarded);
  });

  it('refuses with 503 and Retry-After before forwarding when the queue is full', async () => {
    fake.hold();
    const passes = fake.passes.length;
    const computing = context(['surrogate'], { rows: 2, cols: FEATURES, data: new Float32Array(2 * FEATURES) });
    await waitFor(() => fake.passes.length > passes, { what: 'a forward pass to start', timeoutMs: 5000 });
    const waiting = context(['surrogate'], { rows: 2, cols: FEATURES, data: new Float32Array(2 * FEATURES) });
    const forwarded = upstream.requests.length;
    const res = await infer(1).expect(503);
    assert.match(res.headers['retry-after'], /^[1-9]\d*$/);
    assert.equal(upstream.requests.length, forwarded);
    fake.release();
    await Promise.all([computing, waiting]);
  });
});

describe('asyncSurrogate with the batched context', () => {
  before(async () => {
    await initBackend({ log: () => {} });
  });

  it('gives the sync surrogate’s probabilities and Gram matrices, keeps tensors flat, and serves MAD', async () => {
    const surrogate = Surrogate.random({ arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 3 });
    const model = asyncSurrogate(surrogate);
    const context = batchedSurrogateContext({ surrogate: model }, { windowMs: 1, maxBatchRows: 3 });
    try {
      const rows = 7;
      const data = Float32Array.from({ length: rows * FEATURES }, (_, i) => Math.sin(i));
      const before = tf.memory().numTensors;
      const [full, ...parts] = await Promise.all([
        context(['surrogate', 'surrogateGram'], { rows, cols: FEATURES, data }),
        ...[0, 1, 2].map((r) => context(['surrogate'], { rows: 1, cols: FEATURES, data: data.subarray(r * FEATURES, (r + 1) * FEATURES) })),
      ]);
      assert.equal(tf.memory().numTensors, before);
      const expectedProbs = surrogate.probs(data, rows).data;
      const expectedGram = surrogate.gram(data, rows);
      full.surrogateProbs!.data.forEach((v, i) => assert.ok(Math.abs(v - expectedProbs[i]) < 1e-6, `prob ${i}`));
      full.gram!.forEach((v, i) =>
        assert.ok(Math.abs(v - expectedGram[i]) < 1e-4 * Math.max(1, Math.abs(expectedGram[i])), `gram ${i}: ${v} vs ${expectedGram[i]}`),
      );
      parts.forEach((part, r) => part.surrogateProbs!.data.forEach((v, k) => assert.ok(Math.abs(v - expectedProbs[r * CLASSES + k]) < 1e-6)));

      const app = express();
      app.use(express.json());
      app.post(
        '/v2/models/mnist/infer',
        poisonPredictions({ defense: 'mad-argmax:eps=0.8,jacobian=full', context }),
        (_req, res) => void res.json(kserveAnswer()),
      );
      const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest(2, FEATURES)).expect(200);
      assertNoOriginalNumbers(res.text);
      assert.equal(tf.memory().numTensors, before);
    } finally {
      await context.close();
      surrogate.dispose();
    }
  });
});

describe('demo app with batching', () => {
  it('answers as the synchronous demo does, refuses over maxRowsPerRequest, and closes', async () => {
    await initBackend({ log: () => {} });
    const model = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 5 });
    const plain = buildDemoApp({ model, defense: 'none', processMetrics: false });
    const batched = buildDemoApp({ model, defense: 'none', processMetrics: false, batching: { windowMs: 5, maxBatchRows: 2, maxRowsPerRequest: 3 } });
    try {
      const bodies = [1, 2, 3].map((rows) => kserveRequest(rows, FEATURES));
      const expected = await Promise.all(bodies.map((body) => request(plain.app).post('/v2/models/mnist/infer').send(body).expect(200)));
      const got = await Promise.all(bodies.map((body) => request(batched.app).post('/v2/models/mnist/infer').send(body).expect(200)));
      got.forEach((res, i) => assert.deepEqual(res.body.outputs, expected[i].body.outputs));
      const tooMany = await request(batched.app).post('/v2/models/mnist/infer').send(kserveRequest(4, FEATURES)).expect(413);
      assert.match(tooMany.body.error, /at most 3 per request/);
    } finally {
      await batched.close();
      model.dispose();
    }
  });
});
