/**
 * The nsfwjs example server end to end: nsfwjs's trained MobileNetV2 answers, MAD-argmax with a
 * re-initialised MobileNetV2 surrogate perturbs. Checks that the surrogate saw exactly the tensor
 * nsfwjs's own preprocessing gives the victim (pixels / 255), that the client never gets the
 * victim's probabilities but keeps its top-1 class, bad requests are 400s, and tensors are freed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { load as loadNsfw, type NSFWJS } from 'nsfwjs';
import sharp from 'sharp';
import request from 'supertest';
import { buildNsfwApp, CLASSES, MODEL_DIR, type NsfwApp } from '../../examples/nsfw-server/app.js';
import { loadSurrogate, tf, type SurrogateModel } from '../../src/index.js';

const PATH = '/v1/models/nsfw:predict';

/** A 224×224 RGB PNG (lossless, already the model's size: the server's decode returns these very pixels). */
async function testImage(seed: number): Promise<{ png: Buffer; pixels: Uint8Array }> {
  const pixels = new Uint8Array(224 * 224 * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (Math.imul(i + seed, 2654435761) >>> 24) ^ ((i / 3) % 224);
  const png = await sharp(pixels, { raw: { width: 224, height: 224, channels: 3 } })
    .png()
    .toBuffer();
  return { png, pixels };
}

/** Delegates to `inner` and keeps the inputs it was given. */
function recording(inner: SurrogateModel): SurrogateModel & { seen: Float32Array[] } {
  const seen: Float32Array[] = [];
  return {
    seen,
    classes: inner.classes,
    inputShape: inner.inputShape,
    differentiable: inner.differentiable,
    probsAsync: (inputs, rows) => {
      seen.push(inputs.slice());
      return inner.probsAsync(inputs, rows);
    },
    dispose: () => inner.dispose(),
  };
}

describe('examples/nsfw-server', () => {
  let server: NsfwApp;
  let surrogate: ReturnType<typeof recording>;
  let victim: NSFWJS;

  before(async () => {
    surrogate = recording(await loadSurrogate({ dir: MODEL_DIR, reinit: 7 }));
    // The victim in this thread here (the default is a worker thread, tested below).
    server = await buildNsfwApp({ defense: 'mad-argmax:eps=0.8', surrogate, victimThread: false });
    victim = await loadNsfw('MobileNetV2');
  });
  after(async () => {
    await server?.close();
    victim?.dispose();
  });

  /** nsfwjs's own answer for these pixels: its infer() casts, divides by 255 and runs the model. */
  async function victimProbs(pixels: Uint8Array): Promise<number[]> {
    const probs = tf.tidy(() => victim.infer(tf.tensor3d(pixels, [224, 224, 3], 'int32')) as tf.Tensor);
    const data = Array.from(await probs.data());
    probs.dispose();
    return data;
  }

  it('answers perturbed probabilities of the five classes, keeping the top-1 class, from what the surrogate saw as the victim did', async () => {
    for (const seed of [1, 2]) {
      const { png, pixels } = await testImage(seed);
      surrogate.seen.length = 0;
      const res = await request(server.app)
        .post(PATH)
        .send({ instances: [{ b64: png.toString('base64') }] })
        .expect(200);
      const [answer] = res.body.predictions as number[][];
      assert.equal(answer.length, CLASSES.length);
      assert.ok(Math.abs(answer.reduce((a, b) => a + b, 0) - 1) < 1e-4);
      const original = await victimProbs(pixels);
      const l1 = answer.reduce((sum, p, k) => sum + Math.abs(p - original[k]), 0);
      assert.ok(l1 > 1e-3, `the answer must not be the victim's probabilities (L1 ${l1})`);
      assert.ok(l1 <= 0.8 + 1e-3, `MAD's budget is eps=0.8 in L1, got ${l1}`);
      const argmax = (v: number[]) => v.indexOf(Math.max(...v));
      assert.equal(argmax(answer), argmax(original));
      // The middleware's `inputs.image` gave the surrogate the victim's tensor: pixels / 255, NHWC.
      assert.equal(surrogate.seen.length, 1);
      assert.deepEqual(
        surrogate.seen[0],
        Float32Array.from(pixels, (v) => v / 255),
      );
    }
  });

  it('answers several images in one request, row by row', async () => {
    const images = await Promise.all([3, 4].map(testImage));
    const res = await request(server.app)
      .post(PATH)
      .send({ instances: images.map(({ png }) => ({ b64: png.toString('base64') })) })
      .expect(200);
    assert.equal(res.body.predictions.length, 2);
    for (const [i, { pixels }] of images.entries()) {
      const original = await victimProbs(pixels);
      const answer = res.body.predictions[i] as number[];
      assert.equal(answer.indexOf(Math.max(...answer)), original.indexOf(Math.max(...original)));
    }
  });

  it('refuses bad requests with a 400 (413 for an oversized image) naming the problem', async () => {
    let res = await request(server.app)
      .post(PATH)
      .send({ instances: [{ b64: Buffer.from('not an image').toString('base64') }] })
      .expect(400);
    assert.match(res.body.error, /the image in the \{"b64": \.\.\.\} inputs is not an image/);
    res = await request(server.app).post(PATH).send({ inputs: [] }).expect(400);
    assert.match(res.body.error, /"instances"/);
    res = await request(server.app)
      .post(PATH)
      .send({ instances: new Array(9).fill({ b64: 'AAAA' }) })
      .expect(400);
    assert.match(res.body.error, /1 to 8 images/);
    res = await request(server.app).post(PATH).set('content-type', 'application/json').send('{"instances": [').expect(400);
    assert.equal(res.body.predictions, undefined);
    res = await request(server.app)
      .post(PATH)
      .send({ instances: [{ b64: Buffer.alloc((4 << 20) + 1, 0xff).toString('base64') }] })
      .expect(413);
    assert.match(res.body.error, /the image in the \{"b64": \.\.\.\} inputs is 4194305 bytes, over the limit of 4194304/);
  });

  it('frees its tensors and serves its metrics on its ops app only', async () => {
    const { png } = await testImage(5);
    const body = { instances: [{ b64: png.toString('base64') }] };
    await request(server.app).post(PATH).send(body).expect(200);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) await request(server.app).post(PATH).send(body).expect(200);
    assert.equal(tf.memory().numTensors, before);
    // Not on the clients' app: the metrics show how each answer was changed.
    await request(server.app).get('/metrics').expect(404);
    const metrics = (await request(server.ops).get('/metrics').expect(200)).text;
    assert.match(metrics, /msd_requests_total\{defense="mad:eps=0\.8[^"]*",outcome="defended"\} \d+/);
    assert.match(metrics, /msd_nodejs_eventloop_lag_p99_seconds \d/);
  });
});

describe('examples/nsfw-server with both models in worker threads', () => {
  it('answers as the in-thread server does: MAD within its budget around nsfwjs’s own probabilities, top-1 kept', async () => {
    const threaded = await buildNsfwApp({ defense: 'mad-argmax:eps=0.8', surrogateThread: true, victimThread: true });
    const victim = await loadNsfw('MobileNetV2');
    try {
      // onnxruntime-node is installed here, so the default engine converts the surrogate to ONNX.
      assert.equal(threaded.surrogateEngine, 'onnx');
      const { png, pixels } = await testImage(6);
      const res = await request(threaded.app)
        .post(PATH)
        .send({ instances: [{ b64: png.toString('base64') }] })
        .expect(200);
      const [answer] = res.body.predictions as number[][];
      const probs = tf.tidy(() => victim.infer(tf.tensor3d(pixels, [224, 224, 3], 'int32')) as tf.Tensor);
      const original = Array.from(await probs.data());
      probs.dispose();
      const l1 = answer.reduce((sum, p, k) => sum + Math.abs(p - original[k]), 0);
      assert.ok(l1 > 1e-3 && l1 <= 0.8 + 1e-3, `L1 ${l1}`);
      const argmax = (v: number[]) => v.indexOf(Math.max(...v));
      assert.equal(argmax(answer), argmax(original));
      // Undefended, the threaded victim answers nsfwjs's own probabilities.
      const plain = await buildNsfwApp({ defense: 'none', victimThread: true });
      try {
        const undefended = (
          await request(plain.app)
            .post(PATH)
            .send({ instances: [{ b64: png.toString('base64') }] })
            .expect(200)
        ).body.predictions[0] as number[];
        undefended.forEach((p, k) => assert.ok(Math.abs(p - original[k]) < 1e-5, `class ${k}: ${p} vs ${original[k]}`));
      } finally {
        await plain.close();
      }
    } finally {
      await threaded.close();
      victim.dispose();
    }
  });
});
