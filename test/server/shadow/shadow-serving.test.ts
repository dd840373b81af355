/**
 * The shadow attacker in the serving layer (middleware and proxy): off unless asked for; a drawn
 * request reaches it only once its answer has been sent; training runs in a worker thread while the
 * serving thread goes on answering; no log line carries an input or an answer; after one round on a
 * small stream the gauges are on /metrics, per tier.
 */
import assert from 'node:assert/strict';
import { isMainThread, threadId } from 'node:worker_threads';
import { after, describe, it } from 'node:test';
import express, { type Response } from 'express';
import request from 'supertest';
import { createLogger } from '../../../src/server/logger.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';
import { countDetection } from '../helpers/count-detection.js';
import { assertNoOriginalNumbers, kserveAnswer, kserveRequest, lineCollector, ORIGINAL_ROWS } from '../helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

const FEATURES = 6;
const CLASSES = 3;
/** Every input value starts with these digits: a log line carrying an input would show them. */
const INPUT_DIGITS = '7391827';

/** Row i of class c: distinctive digits, and the class readable from the features (so a knockoff can learn it). */
function inputRow(i: number, c: number): number[] {
  return Array.from({ length: FEATURES }, (_, f) => Number(`0.${INPUT_DIGITS}${(i * FEATURES + f) % 10}`) * (f % CLASSES === c ? 1 : 0.2));
}

/** The toy model the routes serve: the class whose features are largest, answered with ORIGINAL_ROWS' distinctive numbers. */
function modelAnswer(rows: number[][]): number[][] {
  return rows.map((row) => {
    const sums = [0, 1, 2].map((c) => row.filter((_, f) => f % CLASSES === c).reduce((a, b) => a + b, 0));
    const top = sums.indexOf(Math.max(...sums));
    // ORIGINAL_ROWS[0] has its top at 0, [1] at 1; the third class gets a rotation of row 0.
    const base = ORIGINAL_ROWS[0];
    return [0, 1, 2].map((k) => base[(k - top + CLASSES) % CLASSES]);
  });
}

function kserveBody(rows: number[][]) {
  return { inputs: [{ name: 'image', shape: [rows.length, FEATURES], datatype: 'FP32', data: rows.flat() }] };
}

/** Held-out set: 60 rows, labels from the class pattern. */
function heldOut() {
  const rows = Array.from({ length: 60 }, (_, i) => inputRow(i + 1000, i % CLASSES));
  return { x: Float32Array.from(rows.flat()), labels: rows.map((_, i) => i % CLASSES) };
}

const SHADOW = { sample: 1, minSamples: 20, epochs: 3, every: '1h', arch: 'mlp', cpu: 1, seed: 2, batchSize: 16 } as const;

function middlewareApp(shadow: Record<string, unknown> | undefined, logStream: { write(chunk: string): void }) {
  const mw = poisonPredictions({
    defense: 'rounding:decimals=1',
    tiers: { strict: 'argmax' },
    chooseDefense: (req) => (req.headers['x-tier'] as string | undefined) ?? undefined,
    logger: createLogger({ level: 'debug' }, logStream),
    ...(shadow ? { shadow: { heldOut: heldOut(), ...shadow } } : {}),
  });
  const app = express();
  app.use(express.json());
  const responses: Response[] = [];
  app.post('/v2/models/toy/infer', mw, (req, res) => {
    responses.push(res);
    const input = (req.body as ReturnType<typeof kserveBody>).inputs[0];
    const rows = Array.from({ length: input.shape[0] }, (_, r) => input.data.slice(r * FEATURES, (r + 1) * FEATURES));
    const answer = modelAnswer(rows);
    res.json({ model_name: 'toy', outputs: [{ name: 'probabilities', shape: [rows.length, CLASSES], datatype: 'FP32', data: answer.flat() }] });
  });
  app.get('/metrics', mw.metricsHandler);
  return { app, mw, responses };
}

async function sendStream(app: express.Express, requests: number, tier?: string, start = 0): Promise<void> {
  for (let i = 0; i < requests; i++) {
    const rows = [0, 1, 2, 3].map((k) => inputRow(start + i * 4 + k, (i + k) % CLASSES));
    const call = request(app).post('/v2/models/toy/infer').send(kserveBody(rows));
    if (tier) call.set('x-tier', tier);
    await call.expect(200);
  }
}

describe('shadow attacker in the middleware', () => {
  it('is off by default: no shadow, no shadow metrics', async () => {
    const logs = lineCollector();
    const { app, mw } = middlewareApp(undefined, logs.stream);
    await sendStream(app, 2);
    assert.equal(mw.shadow, undefined);
    const text = (await request(app).get('/metrics').expect(200)).text;
    assert.ok(!text.includes('msd_shadow_'), 'shadow metrics without a shadow');
  });

  it('takes a drawn request only once its answer has been sent', async () => {
    const logs = lineCollector();
    const { app, mw, responses } = middlewareApp({ ...SHADOW }, logs.stream);
    const shadow = mw.shadow!;
    const offered: { finished: boolean; rows: number }[] = [];
    const offer = shadow.offer;
    shadow.offer = (answer) => {
      const res = responses.at(-1)!;
      offered.push({ finished: res.writableFinished, rows: answer.original.rows });
      offer(answer);
    };
    try {
      await sendStream(app, 5);
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(offered.length, 5);
      for (const o of offered) {
        assert.equal(o.finished, true, 'the shadow saw a request before its answer was sent');
        assert.equal(o.rows, 4);
      }
      assert.equal(shadow.held().default.train + shadow.held().default.back, 20);
    } finally {
      await shadow.close();
    }
  });

  it('trains in a worker thread while the serving thread answers, and publishes its gauges per tier after one round; no log line carries an input or an answer', async () => {
    const logs = lineCollector();
    const { app, mw } = middlewareApp({ ...SHADOW, minProtection: 0.05 }, logs.stream);
    const shadow = mw.shadow!;
    try {
      await sendStream(app, 12);
      await sendStream(app, 12, 'strict', 500);
      let roundDone = false;
      const round = shadow.runRound().finally(() => {
        roundDone = true;
      });
      // Answers keep coming while the round runs: none of its work is on this thread.
      await sendStream(app, 3, undefined, 900);
      assert.equal(roundDone, false, 'the round finished before the requests sent meanwhile were answered');
      const result = await round;
      assert.ok(result, 'no round ran');
      assert.ok(isMainThread);
      assert.notEqual(result.trainerThreadId, threadId, 'trained on the serving thread');
      assert.ok(result.trainerThreadId > 0);
      assert.deepEqual(result.figures.map((f) => f.tier).sort(), ['default', 'strict']);

      const text = (await request(app).get('/metrics').expect(200)).text;
      for (const tier of ['default', 'strict']) {
        for (const answers of ['defended', 'original']) {
          const line = new RegExp(`^msd_shadow_attacker_accuracy_ratio\\{answers="${answers}",tier="${tier}"\\} ([\\d.e-]+)$`, 'm').exec(text);
          assert.ok(line, `no accuracy gauge for ${answers}/${tier}:\n${text}`);
          const value = Number(line[1]);
          assert.ok(value >= 0 && value <= 1, `${answers}/${tier}: ${value}`);
          assert.match(text, new RegExp(`^msd_shadow_attacker_agreement_ratio\\{answers="${answers}",tier="${tier}",on="held_back"\\} `, 'm'));
        }
        assert.match(text, new RegExp(`^msd_shadow_protection_ratio\\{tier="${tier}"\\} `, 'm'));
        assert.match(text, new RegExp(`^msd_shadow_training_rows\\{tier="${tier}"\\} \\d+`, 'm'));
      }
      assert.match(text, /^msd_shadow_rounds_total\{result="done"\} 1$/m);
      assert.match(text, /^msd_shadow_protection_min_ratio 0\.05$/m);
      // The undefended knockoff learns the toy model; argmax answers keep the top-1, so strict's knockoff does too.
      const original = result.figures.find((f) => f.tier === 'default')!.accuracy.original;
      assert.ok(original > 0.5, `knockoff on the original answers: ${original}`);

      const all = logs.raw.join('');
      assert.ok(!all.includes(INPUT_DIGITS), 'a log line carries an input value');
      assertNoOriginalNumbers(all);
      assert.ok(
        logs.lines.some((l) => l.msg === 'shadow round'),
        'no round logged',
      );
    } finally {
      await shadow.close();
    }
  });

  it('with client detection, samples each answer under the tier the detection chose, and labels no client', async () => {
    const mw = poisonPredictions({
      defense: 'rounding:decimals=2',
      tiers: { argmax: 'argmax' },
      clients: { identity: 'header:x-api-key', detection: countDetection({ escalateAt: 3, tier: 'argmax' }) },
      shadow: { heldOut: { x: new Float32Array(2 * 4), labels: [0, 1] }, sample: 1, every: '1h' },
    });
    const app = express();
    app.use(express.json());
    app.post('/v2/models/mnist/infer', mw, (_req, res) => res.json(kserveAnswer()));
    app.get('/metrics', mw.metricsHandler);
    try {
      // alice: 2 answers under the default defense, then 3 escalated to argmax; bob: 2 under the default.
      for (let i = 0; i < 5; i++) await request(app).post('/v2/models/mnist/infer').set('x-api-key', 'key-alice-0001').send(kserveRequest()).expect(200);
      for (let i = 0; i < 2; i++) await request(app).post('/v2/models/mnist/infer').set('x-api-key', 'key-bob-000002').send(kserveRequest()).expect(200);
      await new Promise((resolve) => setImmediate(resolve));
      const text = (await request(app).get('/metrics').expect(200)).text;
      assert.match(text, /^msd_shadow_sampled_rows_total\{tier="default"\} 8$/m);
      assert.match(text, /^msd_shadow_sampled_rows_total\{tier="argmax"\} 6$/m);
      const shadowLines = text.split('\n').filter((l) => l.startsWith('msd_shadow_'));
      assert.ok(
        shadowLines.every((l) => !/key-|alice|bob|client/.test(l)),
        shadowLines.join('\n'),
      );
    } finally {
      await mw.shadow!.close();
      await mw.clients?.close();
    }
  });

  it('refuses bad shadow options, saying what to write', () => {
    const sink = { write() {} };
    assert.throws(() => middlewareApp({ sample: 0 }, sink), /shadow\.sample must be a number in \(0, 1\]/);
    assert.throws(() => middlewareApp({ every: 300 }, sink), /shadow\.every must be a time such as "300s"/);
    assert.throws(() => middlewareApp({ smaple: 0.1 }, sink), /unknown option\(s\) smaple; allowed: heldOut, sample/);
    assert.throws(() => middlewareApp({ arch: 'model.onnx' }, sink), /an ONNX file cannot be trained here/);
    assert.throws(() => poisonPredictions({ defense: 'argmax', shadow: {} as never }), /shadow\.heldOut must be \{ x: Float32Array/);
  });
});

describe('shadow attacker in the proxy', () => {
  let upstream: StubUpstream;
  let proxy: RunningProxy | undefined;
  after(async () => {
    await proxy?.close(100);
    await upstream?.close();
  });

  it('samples answers whose defense reads no inputs (the inputs read after the answer), trains, and logs no input or answer', async () => {
    upstream = await startStubUpstream('kserve-v2', ORIGINAL_ROWS, { record: false });
    const logs = lineCollector();
    proxy = await startDefenseProxy({
      metricsPublic: true,
      upstream: upstream.url,
      defense: 'rounding:decimals=1',
      logger: createLogger({ level: 'debug' }, logs.stream),
      shadow: {
        heldOut: { x: Float32Array.from([inputRow(1, 0), inputRow(2, 1), inputRow(3, 0), inputRow(4, 1)].flat()), labels: [0, 1, 0, 1] },
        ...SHADOW,
        minSamples: 10,
      },
    });
    const shadow = proxy.proxy.shadow!;
    // The stub answers ORIGINAL_ROWS (row 0: class 0, row 1: class 1) whatever it is asked.
    for (let i = 0; i < 15; i++) {
      await request(proxy.url)
        .post('/v2/models/toy/infer')
        .send(kserveBody([inputRow(i * 2, 0), inputRow(i * 2 + 1, 1)]))
        .expect(200);
    }
    await new Promise((resolve) => setImmediate(resolve));
    const held = shadow.held().default;
    assert.equal(held.train + held.back, 30);
    const result = await shadow.runRound();
    assert.ok(result);
    assert.notEqual(result.trainerThreadId, threadId);
    const text = (await request(proxy.url).get('/metrics').expect(200)).text;
    assert.match(text, /^msd_shadow_attacker_accuracy_ratio\{answers="defended",tier="default"\} /m);
    assert.match(text, /^msd_shadow_attacker_accuracy_ratio\{answers="original",tier="default"\} /m);
    assert.match(text, /^msd_shadow_sampled_rows_total\{tier="default"\} 30$/m);
    const all = logs.raw.join('');
    assert.ok(!all.includes(INPUT_DIGITS), 'a log line carries an input value');
    assertNoOriginalNumbers(all);
  });
});
