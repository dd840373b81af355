/**
 * A request whose body express.json() did not parse (text/plain, a form, no body at all) is the
 * client's mistake: 415 or 400 with a message that says so, the same on Express 4 (whose
 * body-parser leaves {}) and Express 5 (which leaves req.body undefined). Only a JSON body that
 * was never parsed (express.json() not mounted) stays the server's 500.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import express5, { type NextFunction, type Request, type Response } from 'express';
import express4 from 'express4';
import request from 'supertest';
import { poisonPredictions } from '../../../src/server/middleware.js';
import type { ServingOptions } from '../../../src/server/options.js';
import { countDetection } from '../helpers/count-detection.js';
import { assertNoOriginalNumbers, contextEchoDefense, kserveAnswer, kserveRequest, uniformSurrogate } from '../helpers/fixtures.js';

const PATH = '/v2/models/mnist/infer';

for (const [version, express] of [
  ['5', express5],
  ['4', express4 as unknown as typeof express5],
] as const) {
  /** Each part of the middleware that reads the request's inputs: a surrogate defense, the route's inputsOf, client detection. */
  const setups: Record<string, { options: ServingOptions<Request>; viaInputsOf?: boolean }> = {
    'a surrogate defense': { options: { defense: contextEchoDefense(), context: uniformSurrogate(3).provider } },
    'mw.inputsOf(req)': { options: { defense: 'rounding' }, viaInputsOf: true },
    'client detection': { options: { defense: 'rounding', clients: { identity: 'header:x-api-key', detection: countDetection({}) } } },
  };

  function appWith(setup: (typeof setups)[string], parseJson = true) {
    const app = express();
    if (parseJson) app.use(express.json());
    const mw = poisonPredictions(setup.options);
    app.post(PATH, mw, (req: Request, res: Response, next: NextFunction) => {
      if (!setup.viaInputsOf) return void res.json(kserveAnswer());
      mw.inputsOf(req).then(() => void res.json(kserveAnswer()), next);
    });
    app.use(mw.errorHandler);
    return app;
  }

  const post = (app: ReturnType<typeof appWith>) => request(app).post(PATH).set('x-api-key', 'key-alice-0001');

  describe(`poisonPredictions, a request body express.json() did not parse, Express ${version}`, () => {
    for (const [what, setup] of Object.entries(setups)) {
      it(`${what}: text/plain and form bodies get 415, no body 400, never the 500 of a setup mistake`, async () => {
        const app = appWith(setup);
        for (const [kind, res] of [
          ['text/plain', await post(app).set('content-type', 'text/plain').send('1, 2, 3')],
          ['a form', await post(app).type('form').send('inputs=1')],
        ] as const) {
          assert.equal(res.status, 415, `${kind}: ${res.status} ${res.text}`);
          assert.match(res.body.error, /not JSON; send the request as JSON \(content-type: application\/json\)/, kind);
          assertNoOriginalNumbers(res.text);
        }
        const empty = await post(app);
        assert.equal(empty.status, 400, `no body: ${empty.status} ${empty.text}`);
        assert.match(empty.body.error, /no body; send the request as JSON/);
        assertNoOriginalNumbers(empty.text);
        // The parsed request still works.
        const ok = await post(app).send(kserveRequest(2, 4));
        assert.equal(ok.status, 200, ok.text);
      });

      it(`${what}: a JSON body with express.json() not mounted stays the 500 that names the fix`, async () => {
        const app = appWith(setup, false);
        const res = await post(app).send(kserveRequest(2, 4));
        assert.equal(res.status, 500, res.text);
        assert.match(res.body.error, /mount express\.json\(\) before poisonPredictions/);
        assertNoOriginalNumbers(res.text);
        // Without a parser, a body that is not JSON is still the client's 415.
        assert.equal((await post(app).set('content-type', 'text/plain').send('1, 2, 3')).status, 415);
      });
    }
  });
}
