/**
 * mw.errorHandler: a route that reads its inputs through mw.inputsOf(req) and passes failures to
 * next() (Express 5 does so for a rejected async route by itself) gets the middleware's JSON error,
 * with its status and metrics, never Express's HTML page with a stack.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import express, { type Request, type Response } from 'express';
import express4 from 'express4';
import request from 'supertest';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { ORIGINAL_ROWS } from '../helpers/fixtures.js';
import { b64, encode, stripes } from '../helpers/images.js';

const solidJpeg = (w: number, h: number, c: readonly [number, number, number]) =>
  encode(
    stripes(w, h, () => c),
    w,
    h,
    'jpeg',
  );

const PATH = '/v1/models/m:predict';

function appWith(framework: typeof express, mountErrorHandler: boolean) {
  const mw = poisonPredictions({ defense: 'rounding:decimals=2', protocol: 'tf-serving', inputs: { image: { width: 4, height: 4, scale: 1 / 255 } } });
  const app = framework();
  app.use(framework.json({ limit: '1mb' }));
  app.post(PATH, mw, async (req: Request, res: Response, next: (error?: unknown) => void) => {
    try {
      const rows = await mw.inputsOf(req);
      res.json({ predictions: ORIGINAL_ROWS.slice(0, 1).concat(Array(rows.rows - 1).fill(ORIGINAL_ROWS[1])) });
    } catch (error) {
      next(error);
    }
  });
  if (mountErrorHandler) app.use(mw.errorHandler);
  return { app, mw };
}

for (const [name, framework] of [
  ['Express 5', express],
  ['Express 4', express4 as unknown as typeof express],
] as const) {
  describe(`mw.errorHandler (${name})`, () => {
    const bad = async () => {
      const jpeg = await solidJpeg(8, 8, [10, 200, 30]);
      return {
        'bad base64': { instances: [{ b64: '!!!not base64!!!' }] },
        'a truncated JPEG': { instances: [{ b64: b64(jpeg.subarray(0, Math.floor(jpeg.length / 2))) }] },
        'an empty list': { instances: [] },
      };
    };

    it('answers each bad request as a JSON 400 naming the problem, no stack', async () => {
      const { app, mw } = appWith(framework, true);
      for (const [what, body] of Object.entries(await bad())) {
        const res = await request(app).post(PATH).send(body);
        assert.equal(res.status, 400, `${what}: ${res.status} ${res.text}`);
        assert.match(String(res.headers['content-type']), /application\/json/, what);
        assert.equal(typeof res.body.error, 'string', `${what}: ${res.text}`);
        assert.doesNotMatch(res.text, /<html|<pre>|\bat .*\.(ts|js):\d+/i, `${what}: ${res.text}`);
      }
      assert.match(await mw.metrics.registry.metrics(), /msd_requests_total\{defense="rounding:decimals=2",outcome="bad_request"\} 3/);
    });

    it('without it, the same request reaches the app’s own handler (what the handler fixes)', async () => {
      const { app } = appWith(framework, false);
      const res = await request(app)
        .post(PATH)
        .send((await bad())['bad base64']);
      assert.doesNotMatch(String(res.headers['content-type']), /application\/json/);
    });

    it('still defends a good request, and leaves other errors to the next handler', async () => {
      const { app } = appWith(framework, true);
      const ok = await request(app)
        .post(PATH)
        .send({ instances: [{ b64: b64(await solidJpeg(8, 8, [10, 200, 30])) }] })
        .expect(200);
      for (const v of ok.body.predictions[0]) assert.equal(Math.round(v * 100) / 100, v);
      const other = framework();
      other.get('/boom', () => {
        throw new Error('not ours');
      });
      other.use(appWith(framework, true).mw.errorHandler);
      other.use((error: Error, _req: Request, res: Response, _next: unknown) => void res.status(500).json({ mine: error.message }));
      assert.deepEqual((await request(other).get('/boom').expect(500)).body, { mine: 'not ours' });
    });
  });
}
