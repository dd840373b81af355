/**
 * A route that begins its answer with res.write (or pipes a model stream into res) and then fails
 * must not get those bytes out through the error page that follows: Express's default handler ends
 * with res.end(html), which the patch would otherwise join to the held start of the answer.
 * Also: Uint8Array bodies (not Buffers) are read as the bytes they are, not as {"0":123,...}.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import express5, { type NextFunction, type Request, type Response } from 'express';
import express4 from 'express4';
import request from 'supertest';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { assertNoOriginalNumbers, kserveAnswer, kserveRequest } from '../helpers/fixtures.js';

const PATH = '/v2/models/mnist/infer';
const ANSWER = JSON.stringify(kserveAnswer());
/** The start of the answer: the model's name and the first original probabilities. */
const START = ANSWER.slice(0, ANSWER.indexOf('"data":[') + 40);

type Route = (req: Request, res: Response, next: NextFunction) => unknown;

for (const [version, express] of [
  ['5', express5],
  ['4', express4 as unknown as typeof express5],
] as const) {
  /** Express 4 leaves a rejected async route hanging: apps wrap it (express-async-handler); Express 5 passes it to next itself. */
  const asyncRoute = (route: (req: Request, res: Response) => Promise<void>): Route =>
    version === '5' ? route : (req, res, next) => route(req, res).catch(next);

  /** The route behind the middleware, and Express's own default error handler after it (nothing mounted). */
  function appWith(route: Route) {
    const app = express();
    app.set('env', 'test'); // Express's handler then prints no stack for each expected failure
    app.use(express.json());
    app.post(PATH, poisonPredictions({ defense: 'rounding:decimals=2' }), route);
    return app;
  }

  const failing: Record<string, Route> = {
    'next(error) after res.write': (_req, res, next) => {
      res.setHeader('content-type', 'application/json');
      res.write(START);
      next(new Error('the model crashed half-way'));
    },
    'an async route that throws after res.write': asyncRoute(async (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.write(START);
      await new Promise((resolve) => setImmediate(resolve));
      throw new Error('the model crashed half-way');
    }),
    'a model stream piped into res that errors': (_req, res, next) => {
      res.setHeader('content-type', 'application/json');
      const stream = new Readable({ read() {} });
      stream.on('error', next);
      stream.pipe(res);
      stream.push(START);
      setTimeout(() => stream.destroy(new Error('the model stream broke')), 20);
    },
    'res.status(500).end(text) after res.write': (_req, res) => {
      res.write(START);
      res.status(500).end('internal error');
    },
  };

  describe(`poisonPredictions, a route that fails after it began its answer, Express ${version}`, () => {
    for (const [what, route] of Object.entries(failing)) {
      it(`${what}: the error status, the codec's error body, none of the original numbers`, async () => {
        const res = await request(appWith(route)).post(PATH).send(kserveRequest());
        assert.equal(res.status, 500, `${res.status} ${res.text}`);
        assertNoOriginalNumbers(res.text);
        assert.doesNotMatch(res.text, /model_name|mnist/);
        assert.match(JSON.parse(res.text).error, /withheld/);
      });
    }

    it('still passes an error page the route wrote in one end() (no bytes written before)', async () => {
      const res = await request(appWith((_req, res) => void res.status(422).end('input "image" has the wrong shape')))
        .post(PATH)
        .send(kserveRequest());
      assert.equal(res.status, 422);
      assert.equal(res.text, 'input "image" has the wrong shape');
    });

    it('passes a whole JSON error written in pieces, and withholds the whole answer written in pieces with an error status', async () => {
      const honest = await request(
        appWith((_req, res) => {
          res.status(400).setHeader('content-type', 'application/json');
          res.write('{"error":"input shape ');
          res.end('[1, 785] expected [1, 784]"}');
        }),
      )
        .post(PATH)
        .send(kserveRequest());
      assert.equal(honest.status, 400);
      assert.deepEqual(honest.body, { error: 'input shape [1, 785] expected [1, 784]' });
      const leaky = await request(
        appWith((_req, res) => {
          res.setHeader('content-type', 'application/json');
          res.write(START);
          res.status(500).end(ANSWER.slice(START.length));
        }),
      )
        .post(PATH)
        .send(kserveRequest());
      assert.ok(leaky.status >= 500, `${leaky.status}`);
      assertNoOriginalNumbers(leaky.text);
    });

    it('a route that writes past 64 MiB without end: the answer withheld at the cap, its later writes refused', async () => {
      let accepted = 0;
      const res = await request(
        appWith((_req, res) => {
          res.setHeader('content-type', 'application/json');
          res.write(START);
          const chunk = Buffer.alloc(1 << 20, 0x20);
          for (let i = 0; i < 80; i++) if (res.write(chunk)) accepted++;
          // never ends: without the cap every byte would stay held for as long as the route streams
        }),
      )
        .post(PATH)
        .send(kserveRequest());
      assert.equal(res.status, 500);
      assert.match(JSON.parse(res.text).error, /over 67108864 bytes; it was withheld/);
      assertNoOriginalNumbers(res.text);
      assert.equal(accepted, 63, 'writes past the cap return false');
    });

    it("the cap counts each held chunk, calls back a write past it with an error, and keeps an error page's status", async () => {
      let tiny = 0;
      let failedWith: unknown;
      const res = await request(
        appWith((_req, res) => {
          res.status(404);
          // Tiny writes: bounded by their count too, not only their bytes.
          while (res.write('x')) tiny++;
          res.write(Buffer.alloc(16), (error?: Error | null) => {
            failedWith = error;
          });
        }),
      )
        .post(PATH)
        .send(kserveRequest());
      assert.equal(res.status, 404);
      assert.match(JSON.parse(res.text).error, /withheld/);
      assert.ok(tiny > 100_000 && tiny < (64 * 1024 * 1024) / 256, `${tiny} one-byte writes held`);
      await new Promise((resolve) => setImmediate(resolve));
      assert.match(String(failedWith), /not written/);
    });

    it('still defends an answer written in pieces with status 200', async () => {
      const res = await request(
        appWith((_req, res) => {
          res.setHeader('content-type', 'application/json');
          res.write(START);
          res.end(ANSWER.slice(START.length));
        }),
      )
        .post(PATH)
        .send(kserveRequest())
        .expect(200);
      assert.deepEqual(JSON.parse(res.text).outputs[0].data, [0.71, 0.2, 0.09, 0.14, 0.64, 0.22]);
    });
  });

  describe(`poisonPredictions, Uint8Array bodies (not Buffers), Express ${version}`, () => {
    const bytes = (): Uint8Array => new Uint8Array(Buffer.from(ANSWER));
    const senders: Record<string, (res: Response) => void> = {
      'res.send(uint8array)': (res) => void res.send(bytes()),
      'res.end(uint8array)': (res) => void res.end(bytes()),
      'res.write(uint8array) + res.end()': (res) => {
        res.write(bytes());
        res.end();
      },
    };
    for (const [what, send] of Object.entries(senders)) {
      it(`${what}: defended as the JSON it holds`, async () => {
        const res = await request(appWith((_req, res) => send(res)))
          .post(PATH)
          .send(kserveRequest());
        assert.equal(res.status, 200, `${res.status} ${res.text}`);
        assert.deepEqual(JSON.parse(res.text).outputs[0].data, [0.71, 0.2, 0.09, 0.14, 0.64, 0.22]);
      });
    }

    for (const what of ['res.send(uint8array)', 'res.end(uint8array)']) {
      it(`${what} with status 500: the probabilities it carries are withheld, not passed as bytes`, async () => {
        const res = await request(
          appWith((_req, res) => {
            res.status(500);
            senders[what](res);
          }),
        )
          .post(PATH)
          .send(kserveRequest());
        assert.equal(res.status, 500);
        assertNoOriginalNumbers(res.text);
        // The bytes of the original answer, as numbers ({"0":123,...}) or as text ("123,34,..."), are the answer too.
        for (const numbers of [res.text.match(/(?<=:)\d+/g), res.text.match(/\d+/g)])
          assertNoOriginalNumbers(Buffer.from((numbers ?? []).map(Number)).toString('latin1'));
        assert.match(JSON.parse(res.text).error, /withheld/);
      });
    }
  });
}
