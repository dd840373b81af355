import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import request from 'supertest';
import { createModel, initBackend, predictProbs, Surrogate, tf, type LayersModel } from '../../../src/models/index.js';
import { buildDemoApp } from '../../../src/demo/app.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { loadOrTrainDemoVictim } from '../../../src/demo/victim.js';
import { surrogateContext } from '../../../src/server/surrogate-context.js';
import { seededRandom } from '../../helpers/random-batches.js';

const FEATURES = 16;
const CLASSES = 4;

function pixels(rows: number, seed: number): number[] {
  const random = seededRandom(seed);
  return Array.from({ length: rows * FEATURES }, () => Math.floor(random() * 256));
}

const inferBody = (data: number[], rows: number) => ({ inputs: [{ name: 'image', shape: [rows, FEATURES], datatype: 'UINT8', data }] });

describe('demo inference server', () => {
  let model: LayersModel;
  let surrogate: Surrogate;
  before(async () => {
    await initBackend({ log: () => {} });
    model = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 1, hidden: [8] });
    surrogate = Surrogate.random({ arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 2, hidden: [8] });
  });
  after(() => {
    model.dispose();
    surrogate.dispose();
  });
  const demo = () => buildDemoApp({ model, context: surrogateContext({ surrogate }) });

  it('answers health and metadata in the Open Inference Protocol', async () => {
    const { app } = demo();
    assert.deepEqual((await request(app).get('/v2/health/ready').expect(200)).body, { ready: true });
    const meta = (await request(app).get('/v2/models/mnist').expect(200)).body;
    assert.deepEqual(meta.inputs[0].shape, [-1, FEATURES]);
    assert.deepEqual(meta.outputs[0].shape, [-1, CLASSES]);
  });

  it('answers MAD-argmax-defended probabilities: same top-1 as the model, moved within the budget', async () => {
    const { app } = demo();
    const rows = 5;
    const data = pixels(rows, 3);
    const res = await request(app).post('/v2/models/mnist/infer').send(inferBody(data, rows)).expect(200);
    const output = res.body.outputs[0];
    assert.deepEqual(output.shape, [rows, CLASSES]);
    const original = predictProbs(
      model,
      Float32Array.from(data, (v) => v / 255),
      rows,
    );
    let moved = 0;
    for (let r = 0; r < rows; r++) {
      const got = output.data.slice(r * CLASSES, (r + 1) * CLASSES) as number[];
      const want = Array.from(original.subarray(r * CLASSES, (r + 1) * CLASSES));
      assert.equal(got.indexOf(Math.max(...got)), want.indexOf(Math.max(...want)), `row ${r} keeps its top-1`);
      const l1 = got.reduce((sum, v, c) => sum + Math.abs(v - want[c]), 0);
      assert.ok(l1 <= 0.8 + 1e-4, `row ${r}: L1 ${l1} within eps 0.8`);
      moved += l1;
      assert.ok(Math.abs(got.reduce((a, b) => a + b, 0) - 1) < 1e-5);
    }
    assert.ok(moved > 0.1, 'the defense moved the answers');
  });

  it('answers 400 for malformed JSON and for inputs of the wrong width, in the protocol style', async () => {
    const { app } = demo();
    const malformed = await request(app).post('/v2/models/mnist/infer').set('content-type', 'application/json').send('{"inputs": [').expect(400);
    assert.equal(typeof malformed.body.error, 'string');
    const narrow = await request(app)
      .post('/v2/models/mnist/infer')
      .send({ inputs: [{ name: 'image', shape: [1, 3], datatype: 'FP32', data: [0, 0, 0] }] })
      .expect(400);
    assert.match(narrow.body.error, /3 values per row; the model takes 16/);
  });

  it('serves its metrics only with the bearer token when given one', async () => {
    const token = 'demo-metrics-token-0123456789';
    const { app } = buildDemoApp({ model, context: surrogateContext({ surrogate }), metricsToken: token });
    const refused = await request(app).get('/metrics').expect(401);
    assert.equal(refused.headers['www-authenticate'], 'Bearer');
    assert.doesNotMatch(refused.text, /msd_/);
    await request(app).get('/metrics').set('authorization', `Bearer ${token}x`).expect(401);
    assert.match((await request(app).get('/metrics').set('authorization', `Bearer ${token}`).expect(200)).text, /^msd_demo_process_cpu_seconds_total/m);
  });

  it('serves its metrics, and keeps the tfjs tensor count flat over many requests', async () => {
    const { app } = demo();
    const body = inferBody(pixels(8, 4), 8);
    await request(app).post('/v2/models/mnist/infer').send(body).expect(200);
    const tensors = tf.memory().numTensors;
    for (let i = 0; i < 100; i++) await request(app).post('/v2/models/mnist/infer').send(body).expect(200);
    assert.equal(tf.memory().numTensors, tensors);
    const text = (await request(app).get('/metrics').expect(200)).text;
    assert.match(text, /msd_requests_total\{defense="mad:eps=0\.8,norm=l1,oracle=argmax,jacobian=last-layer",outcome="defended"\} 101/);
    assert.match(text, /msd_demo_process_cpu_seconds_total/);
  });

  it('answers 400 when the surrogate rejects the request inputs (models layer ModelInputError)', async () => {
    const app = express();
    app.use(express.json());
    const guard = poisonPredictions({ defense: 'mad:eps=0.5', context: surrogateContext({ surrogate }) });
    app.post(
      '/v2/models/m/infer',
      guard,
      (_req, res) => void res.json({ outputs: [{ name: 'p', shape: [1, CLASSES], datatype: 'FP32', data: [0.1, 0.2, 0.3, 0.4] }] }),
    );
    const res = await request(app)
      .post('/v2/models/m/infer')
      .send({ inputs: [{ name: 'x', shape: [1, 3], datatype: 'FP32', data: [1, 2, 3] }] })
      .expect(400);
    assert.match(res.body.error, /^request: /);
    assert.doesNotMatch(res.text, /0\.1|0\.3/);
  });

  it('trains the victim once and loads it from the cache on the next start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'msd-demo-'));
    try {
      const random = seededRandom(5);
      const rows = 64;
      const split = {
        x: Float32Array.from({ length: rows * FEATURES }, () => random()),
        labels: Uint8Array.from({ length: rows }, (_, i) => i % CLASSES),
        rows,
      };
      const options = { dir, train: split, test: split, features: FEATURES, classes: CLASSES, epochs: 1, batchSize: 32 };
      const first = await loadOrTrainDemoVictim(options);
      const second = await loadOrTrainDemoVictim(options);
      assert.equal(first.fromCache, false);
      assert.equal(second.fromCache, true);
      assert.equal(second.testAccuracy, first.testAccuracy);
      assert.deepEqual(predictProbs(second.model, split.x, rows), predictProbs(first.model, split.x, rows));
      first.model.dispose();
      second.model.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
