import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import express5, { type Request, type Response } from 'express';
import express4 from 'express4';
import { Registry } from 'prom-client';
import request from 'supertest';
import { createLogger } from '../../../src/server/logger.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import type { ServingOptions } from '../../../src/server/options.js';
import {
  assertNoOriginalNumbers,
  contextEchoDefense,
  kserveAnswer,
  kserveRequest,
  lineCollector,
  ORIGINAL_ROWS,
  throwingDefense,
  uniformSurrogate,
} from '../helpers/fixtures.js';

/** Most running servers are still on Express 4: every case runs against 4 and 5. */
for (const [version, express] of [
  ['5', express5],
  ['4', express4 as unknown as typeof express5],
] as const) {
  /** An app whose inference route answers `answer` (or what `route` sends) behind the middleware. */
  function appWith(options: ServingOptions<Request>, route: (req: Request, res: Response) => void = (_req, res) => void res.json(kserveAnswer())) {
    const app = express();
    app.use(express.json());
    const guard = poisonPredictions(options);
    app.post('/v2/models/mnist/infer', guard, route);
    app.get('/metrics', guard.metricsHandler);
    return { app, guard };
  }

  const dataOf = (body: { outputs: { data: number[] }[] }) => body.outputs[0].data;

  describe(`poisonPredictions, mount mode, Express ${version}`, () => {
    it('rounds the probabilities a route sends with res.json, leaving the rest of the answer', async () => {
      const { app } = appWith({ defense: 'rounding:decimals=2' });
      const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
      assert.deepEqual(dataOf(res.body), [0.71, 0.2, 0.09, 0.14, 0.64, 0.22]);
      assert.equal(res.body.model_name, 'mnist');
      assert.deepEqual(res.body.outputs[0].shape, [2, 3]);
      assertNoOriginalNumbers(res.text);
    });

    it('defends res.send of an object, of a JSON string, and raw res.write/res.end', async () => {
      const senders: ((res: Response) => void)[] = [
        (res) => void res.send(kserveAnswer()),
        (res) => void res.type('json').send(JSON.stringify(kserveAnswer())),
        (res) => {
          res.setHeader('content-type', 'application/json');
          const text = JSON.stringify(kserveAnswer());
          res.write(text.slice(0, 20));
          res.end(text.slice(20));
        },
      ];
      for (const send of senders) {
        const { app } = appWith({ defense: 'argmax' }, (_req, res) => send(res));
        const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
        assert.deepEqual(JSON.parse(res.text).outputs[0].data, [1, 0, 0, 0, 1, 0]);
        assertNoOriginalNumbers(res.text);
      }
    });

    it('fails closed when the defense throws: a JSON error, none of the original numbers', async () => {
      const { app } = appWith({ defense: throwingDefense });
      const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(500);
      assert.match(res.body.error, /withheld/);
      assertNoOriginalNumbers(res.text);
    });

    it('answers the argmax label only when the defense throws and onFailure is "argmax"', async () => {
      const { app, guard } = appWith({ defense: throwingDefense, onFailure: 'argmax' });
      const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
      assert.deepEqual(dataOf(res.body), [1, 0, 0, 0, 1, 0]);
      assertNoOriginalNumbers(res.text);
      const text = await guard.metrics.registry.metrics();
      assert.match(text, /msd_requests_total\{defense="broken",outcome="fallback_argmax"\} 1/);
    });

    it('fails closed when the route answers something the codec cannot read', async () => {
      const answers = [
        '0.7123457,0.2034567',
        { predictions: ORIGINAL_ROWS },
        { outputs: [{ name: 'p', shape: [2, 3], datatype: 'INT32', data: [1, 2, 3, 4, 5, 6] }] },
      ];
      for (const answer of answers) {
        const { app } = appWith({ defense: 'rounding' }, (_req, res) => void res.status(200).send(answer));
        const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(500);
        assert.equal(typeof res.body.error, 'string');
        assertNoOriginalNumbers(res.text);
      }
    });

    it('withholds rows that are not probabilities without quoting them back', async () => {
      const { app } = appWith({ defense: 'rounding' }, (_req, res) => void res.json(kserveAnswer([[0.7123457, 0.9034567, 0.0841976]])));
      const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest(1)).expect(500);
      assert.match(res.body.error, /not a valid batch of probability rows/);
      assertNoOriginalNumbers(res.text);
    });

    it('logs why an answer was withheld without quoting its numbers', async () => {
      const collector = lineCollector();
      const { app } = appWith(
        { defense: 'rounding', logger: createLogger({ level: 'info' }, collector.stream) },
        (_req, res) => void res.json(kserveAnswer([[0.7123457, -0.2034567, 0.491111]])),
      );
      await request(app).post('/v2/models/mnist/infer').send(kserveRequest(1)).expect(500);
      assert.equal(collector.lines.length, 1);
      assert.equal(collector.lines[0].outcome, 'bad_answer');
      assert.match(String(collector.lines[0].error), /InvalidBatchError: row 0: entry 1 is negative/);
      assertNoOriginalNumbers(collector.raw.join(''));
    });

    it('masks whole numbers of the answer in the log too (logits served as probabilities)', async () => {
      const collector = lineCollector();
      const { app } = appWith(
        { defense: 'rounding', logger: createLogger({ level: 'info' }, collector.stream) },
        (_req, res) => void res.json(kserveAnswer([[-37, 51, -13]])),
      );
      await request(app).post('/v2/models/mnist/infer').send(kserveRequest(1)).expect(500);
      const error = String(collector.lines[0].error);
      assert.match(error, /row 0: entry 0 is negative/);
      assert.doesNotMatch(error, /37|51|13/);
    });

    it('passes error answers through, unless they carry probabilities', async () => {
      const plain = appWith({ defense: 'rounding' }, (_req, res) => void res.status(422).json({ error: 'input "image" has the wrong shape' }));
      const passed = await request(plain.app).post('/v2/models/mnist/infer').send({}).expect(422);
      assert.deepEqual(passed.body, { error: 'input "image" has the wrong shape' });

      const leaky = appWith({ defense: 'rounding' }, (_req, res) => void res.status(500).json(kserveAnswer()));
      const blocked = await request(leaky.app).post('/v2/models/mnist/infer').send({}).expect(500);
      assert.match(blocked.body.error, /withheld/);
      assertNoOriginalNumbers(blocked.text);
    });

    it('treats logits answers with inputFormat "logits"', async () => {
      const { app } = appWith({ defense: 'rounding:decimals=3', inputFormat: 'logits' }, (_req, res) => void res.json(kserveAnswer([[2, 0, -1]])));
      const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest(1)).expect(200);
      const e = [Math.exp(2), 1, Math.exp(-1)];
      const sum = e[0] + e[1] + e[2];
      assert.deepEqual(
        dataOf(res.body),
        e.map((v) => Math.round((v / sum) * 1000) / 1000),
      );
    });

    it('gives surrogate-based defenses the inputs of the request, and rejects a request without them (400)', async () => {
      const defense = contextEchoDefense();
      const surrogate = uniformSurrogate(3);
      const { app } = appWith({ defense, context: surrogate.provider });
      const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest(2, 4)).expect(200);
      assert.deepEqual(surrogate.calls, [{ rows: 2, cols: 4 }]);
      for (const v of dataOf(res.body)) assert.ok(Math.abs(v - 1 / 3) < 1e-6);

      const missing = await request(app).post('/v2/models/mnist/infer').send({ something: 'else' }).expect(400);
      assert.match(missing.body.error, /"inputs"/);
      const mismatch = await request(app).post('/v2/models/mnist/infer').send(kserveRequest(3, 4)).expect(500);
      assert.match(mismatch.body.error, /2 rows for 3 input rows/);
      assertNoOriginalNumbers(mismatch.text);
    });

    it('says so when express.json() is missing before a defense that reads the request', async () => {
      const app = express();
      app.post(
        '/infer',
        poisonPredictions({ defense: contextEchoDefense(), context: uniformSurrogate(3).provider }),
        (_req, res) => void res.json(kserveAnswer()),
      );
      const res = await request(app).post('/infer').send(kserveRequest()).expect(500);
      assert.match(res.body.error, /mount express\.json\(\) before poisonPredictions/);
      assertNoOriginalNumbers(res.text);
    });

    it('fails closed when the context provider throws', async () => {
      const { app } = appWith({ defense: contextEchoDefense(), context: async () => Promise.reject(new Error('surrogate out of memory')) });
      const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(500);
      assert.doesNotMatch(res.body.error, /memory/);
      assertNoOriginalNumbers(res.text);
    });

    it('chooses a defense per request by tier, skips it on null, and fails closed on an unknown tier', async () => {
      const { app } = appWith({
        defense: 'argmax',
        tiers: { premium: 'rounding:decimals=1', trusted: 'none' },
        chooseDefense: (req) => {
          const tier = req.get('x-tier');
          return tier === 'internal' ? null : tier;
        },
      });
      const post = (tier?: string) => {
        const r = request(app).post('/v2/models/mnist/infer');
        if (tier) r.set('x-tier', tier);
        return r.send(kserveRequest());
      };
      assert.deepEqual(dataOf((await post().expect(200)).body), [1, 0, 0, 0, 1, 0]);
      assert.deepEqual(dataOf((await post('premium').expect(200)).body), [0.7, 0.2, 0.1, 0.1, 0.7, 0.2]);
      assert.deepEqual(dataOf((await post('internal').expect(200)).body), ORIGINAL_ROWS.flat());
      const unknown = await post('gold').expect(500);
      assert.match(unknown.body.error, /"gold", which is not a configured tier/);
      assertNoOriginalNumbers(unknown.text);
    });

    it('counts outcomes, rows, top-1 changes and L1 in its metrics', async () => {
      const { app } = appWith({ defense: 'mad-argmax:eps=0.5', context: uniformSurrogate(3).provider });
      await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
      const text = (await request(app).get('/metrics').expect(200)).text;
      const spec = 'mad:eps=0.5,norm=l1,oracle=argmax,jacobian=last-layer';
      assert.match(text, new RegExp(`msd_requests_total\\{defense="${spec}",outcome="defended"\\} 1`));
      assert.match(text, new RegExp(`msd_perturbed_rows_total\\{defense="${spec}"\\} 2`));
      assert.match(text, new RegExp(`msd_perturbation_l1_count\\{defense="${spec}"\\} 2`));
      assert.match(text, new RegExp(`msd_defense_duration_seconds_count\\{defense="${spec}"\\} 1`));
      const l1Sum = Number(new RegExp(`msd_perturbation_l1_sum\\{defense="${spec}"\\} (\\S+)`).exec(text)![1]);
      assert.ok(l1Sum > 0 && l1Sum <= 1 + 1e-6, `L1 sum ${l1Sum} within 2 rows × eps`);
    });

    it('keeps separate metrics for two instances on one app, and shares a registry passed twice', async () => {
      const app = express();
      app.use(express.json());
      const first = poisonPredictions({ defense: 'rounding' });
      const second = poisonPredictions({ defense: 'argmax' });
      app.post('/a', first, (_req, res) => void res.json(kserveAnswer()));
      app.post('/b', second, (_req, res) => void res.json(kserveAnswer()));
      await request(app).post('/a').send({}).expect(200);
      await request(app).post('/a').send({}).expect(200);
      await request(app).post('/b').send({}).expect(200);
      const firstText = await first.metrics.registry.metrics();
      const secondText = await second.metrics.registry.metrics();
      assert.match(firstText, /msd_requests_total\{defense="rounding:decimals=3",outcome="defended"\} 2/);
      assert.doesNotMatch(firstText, /argmax/);
      assert.match(secondText, /msd_requests_total\{defense="argmax",outcome="defended"\} 1/);
      assert.doesNotMatch(secondText, /rounding/);

      const shared = new Registry();
      const one = poisonPredictions({ defense: 'rounding', registry: shared });
      const two = poisonPredictions({ defense: 'argmax', registry: shared });
      assert.equal(one.metrics.requests, two.metrics.requests);
    });

    it('writes one log line per answer with defense, rows and mean L1, and no probabilities', async () => {
      const collector = lineCollector();
      const logger = createLogger({ level: 'info' }, collector.stream);
      const { app } = appWith({ defense: 'rounding:decimals=1', logger });
      await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
      assert.equal(collector.lines.length, 1);
      const line = collector.lines[0];
      assert.equal(line.defense, 'rounding:decimals=1');
      assert.equal(line.outcome, 'defended');
      assert.equal(line.rows, 2);
      assert.ok(typeof line.meanL1 === 'number' && line.meanL1 > 0);
      assertNoOriginalNumbers(collector.raw.join(''));
    });

    it('checks its options when built, saying what to write instead', () => {
      assert.throws(() => poisonPredictions({ defense: 'mad:eps=9' }), /defense: mad: eps=9 exceeds/);
      assert.throws(() => poisonPredictions({ defense: 'mad:eps=0.5' }), /needs surrogate; pass context: surrogateContext/);
      assert.throws(() => poisonPredictions({ defense: 'rounding', protocol: 'grpc' as never }), /unknown protocol "grpc"; write one of "kserve-v2"/);
      assert.throws(() => poisonPredictions({ defense: 'rounding', onFailure: 'pass' as never }), /onFailure must be "error" or "argmax"/);
      assert.throws(() => poisonPredictions({ defense: 'rounding', defence: 'x' } as never), /unknown option\(s\) defence/);
      assert.throws(() => poisonPredictions({ defense: 'rounding', tiers: { free: 'topk:k=0' } }), /tiers\.free: /);
      assert.throws(() => poisonPredictions({ defense: 'rounding', protocol: { name: 'json-path', probsPath: 'a..b' } }), /cannot read path "a\.\.b"/);
      assert.throws(() => poisonPredictions({ defense: throwingDefense, inputFormat: 'logits' }), /parseDefense\(spec, \{ inputFormat \}\)/);
    });
  });
}
