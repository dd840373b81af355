/**
 * mw.inputsOf(req): the route gets the rows the surrogate and the detectors see, decoded once per
 * request whoever asks first, and a bad image rejects with the client's 400.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import express, { type NextFunction, type Request, type Response } from 'express';
import request from 'supertest';
import type { DefenseContext } from '../../../src/defenses/index.js';
import { RequestFormatError, ServingError } from '../../../src/server/errors.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { tfServingCodec } from '../../../src/server/protocols/tf-serving.js';
import type { Codec, InputRows } from '../../../src/server/protocols/index.js';
import { countDetection } from '../helpers/count-detection.js';
import { assertNoOriginalNumbers, contextEchoDefense, ORIGINAL_ROWS } from '../helpers/fixtures.js';
import { b64, solidPng } from '../helpers/images.js';

const PATH = '/v1/models/m:predict';
const IMAGE = { width: 4, height: 4, scale: 1 / 255 };

/** TF Serving's codec, counting how often the request's inputs are read. */
function countingCodec(): Codec & { reads: number } {
  const codec = tfServingCodec();
  const counting = { ...codec, reads: 0 } as Codec & { reads: number };
  counting.readInputs = (body: unknown) => {
    counting.reads++;
    return codec.readInputs(body);
  };
  return counting;
}

function appWith(options: { detection?: boolean; bodyParser?: boolean } = {}) {
  const codec = countingCodec();
  const surrogateSaw: InputRows[] = [];
  const routeSaw: InputRows[] = [];
  const context = (_needs: readonly string[], inputs: InputRows): DefenseContext => {
    surrogateSaw.push(inputs);
    return { surrogateProbs: { rows: inputs.rows, cols: 3, data: new Float32Array(inputs.rows * 3).fill(1 / 3) } };
  };
  const detection = countDetection({});
  const mw = poisonPredictions({
    defense: contextEchoDefense(),
    protocol: codec,
    context,
    inputs: { image: IMAGE },
    ...(options.detection ? { clients: { identity: 'header:x-api-key', detection } } : {}),
  });
  const app = express();
  if (options.bodyParser ?? true) app.use(express.json({ limit: '1mb' }));
  app.post(PATH, mw, async (req: Request, res: Response, next: NextFunction) => {
    try {
      const rows = await mw.inputsOf(req);
      routeSaw.push(rows);
      res.json({ predictions: ORIGINAL_ROWS.slice(0, rows.rows) });
    } catch (error) {
      next(error);
    }
  });
  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    res.status(error instanceof ServingError ? error.status : 500).json({ error: (error as Error).message, kind: (error as Error).name });
  });
  return { app, codec, surrogateSaw, routeSaw, detection };
}

const body = async () => ({ instances: [{ b64: b64(await solidPng(6, 6, [255, 0, 0])) }, { b64: b64(await solidPng(3, 5, [0, 0, 255])) }] });

describe('mw.inputsOf(req)', () => {
  it('gives the route the decoded rows the surrogate sees, read once per request', async () => {
    const { app, codec, surrogateSaw, routeSaw } = appWith();
    const res = await request(app)
      .post(PATH)
      .send(await body())
      .expect(200);
    assertNoOriginalNumbers(res.text);
    assert.equal(codec.reads, 1, 'the inputs were read once for the route and the defense');
    assert.equal(routeSaw.length, 1);
    assert.equal(surrogateSaw[0], routeSaw[0], 'the very same rows');
    assert.deepEqual([routeSaw[0].rows, routeSaw[0].cols, routeSaw[0].shape], [2, 48, [4, 4, 3]]);
    assert.deepEqual(Array.from(routeSaw[0].data.subarray(0, 3)), [1, 0, 0], 'row 0 is the red image, preprocessed');
    assert.deepEqual(Array.from(routeSaw[0].data.subarray(48, 51)), [0, 0, 1], 'row 1 is the blue image');
  });

  it('shares the read with the detectors too, and each request reads its own', async () => {
    const { app, codec, surrogateSaw, routeSaw, detection } = appWith({ detection: true });
    for (let i = 0; i < 2; i++)
      await request(app)
        .post(PATH)
        .set('x-api-key', 'key-alice-0001')
        .send(await body())
        .expect(200);
    assert.equal(codec.reads, 2, 'one read per request for the route, the detectors and the defense');
    assert.equal(detection.observed.length, 2);
    assert.equal(detection.observed[1].inputs?.data, routeSaw[1].data, 'the detectors saw the same pixels');
    assert.equal(surrogateSaw[1], routeSaw[1]);
    assert.notEqual(routeSaw[0], routeSaw[1]);
  });

  it('rejects with the client’s 400 for a bad image, and the answer is the error', async () => {
    const { app, surrogateSaw, routeSaw } = appWith();
    const res = await request(app)
      .post(PATH)
      .send({ instances: [{ b64: b64(Buffer.from('not an image at all')) }] })
      .expect(400);
    assert.equal(res.body.kind, new RequestFormatError('x').name);
    assert.match(res.body.error, /is not an image/);
    assert.deepEqual([surrogateSaw.length, routeSaw.length], [0, 0]);
  });

  it('says what to mount when the body was not parsed', async () => {
    const { app } = appWith({ bodyParser: false });
    const res = await request(app)
      .post(PATH)
      .send(await body())
      .expect(500);
    assert.match(res.body.error, /mount express\.json\(\) before poisonPredictions/);
  });
});
