/**
 * Request inputs built to break the reader rather than the model: an array nested 10,000 levels deep
 * (which recursion would answer with a stack overflow, a 500 "the defense failed"), a KServe tensor of
 * rank 10,001, and a number past float32 (1e400 parses to Infinity). Each is the client's mistake: a
 * 400 naming it, through the middleware, the proxy and the demo app.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import express, { type Request } from 'express';
import request from 'supertest';
import { createModel, initBackend, Surrogate, type LayersModel } from '../../../src/models/index.js';
import { buildDemoApp } from '../../../src/demo/app.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import type { ServingOptions } from '../../../src/server/options.js';
import { kserveV2Codec, tfServingCodec } from '../../../src/server/protocols/index.js';
import { flattenNumbers, inputsToRows, MAX_NESTING } from '../../../src/server/protocols/numbers.js';
import { startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';
import { surrogateContext } from '../../../src/server/surrogate-context.js';
import { assertNoOriginalNumbers, contextEchoDefense, kserveAnswer, ORIGINAL_ROWS, uniformSurrogate } from '../helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

const DEPTH = 10_000;

/** [[[…[0.5]…]]], `depth` arrays deep. */
function nested(depth: number): unknown {
  let value: unknown = 0.5;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/** The JSON text of the same (JSON.stringify itself recurses, and would overflow in the test). */
const nestedText = (depth: number): string => `${'['.repeat(depth)}0.5${']'.repeat(depth)}`;

const deepKserve = () => ({ inputs: [{ name: 'image', shape: [1, 1], datatype: 'FP32', data: [nested(DEPTH)] }] });
const deepKserveText = (features = 1) => `{"inputs":[{"name":"image","shape":[1,${features}],"datatype":"FP32","data":[${nestedText(DEPTH)}]}]}`;
const deepTfServing = () => ({ instances: [nested(DEPTH)] });
const deepTfServingText = () => `{"instances":[${nestedText(DEPTH)}]}`;
/** A BYTES tensor of rank 10,001 (all ones) over data nested as deep: its strings would be flattened that deep. */
const deepBytes = () => ({ inputs: [{ name: 'image', shape: new Array(DEPTH + 1).fill(1), datatype: 'BYTES', data: [nested(DEPTH)] }] });
const deepBytesText = () =>
  `{"inputs":[{"name":"image","shape":[${new Array(DEPTH + 1).fill(1).join(',')}],"datatype":"BYTES","data":[${nestedText(DEPTH)}]}]}`;
/** JSON text with the literal 1e400 (JSON.parse gives Infinity), as a client can send it. */
const overflowText = (features: number) => `{"inputs":[{"name":"image","shape":[1,${features}],"datatype":"FP32","data":[1e400${',0'.repeat(features - 1)}]}]}`;

const _TOO_DEEP = new RegExp(`nested deeper than ${MAX_NESTING} levels`);
const NOT_FINITE = /input row 0 value 0 is not a finite number \(Infinity: a JSON number past ±3\.4e38, such as 1e400, overflows\)/;

describe('hostile inputs: the readers', () => {
  it('flattenNumbers flattens without recursion and stops at MAX_NESTING levels', () => {
    const out: number[] = [];
    assert.equal(flattenNumbers([[1, [2, 3]], [], [[[4]]], 5], out), undefined);
    assert.deepEqual(out, [1, 2, 3, 4, 5]);
    assert.equal(flattenNumbers(nested(MAX_NESTING), []), undefined, `${MAX_NESTING} levels are fine`);
    assert.equal(flattenNumbers(nested(MAX_NESTING + 1), []), 'too-deep');
    assert.equal(flattenNumbers(nested(DEPTH), []), 'too-deep');
    assert.equal(flattenNumbers([[1], ['x']], []), 'not-numbers');
    assert.match(String(inputsToRows([nested(DEPTH)])), /input row 0 is nested deeper than 32 levels/);
  });

  it('the codecs answer 400 (RequestFormatError), not a stack overflow', () => {
    for (const [codec, body] of [
      [kserveV2Codec(), deepKserve()],
      [tfServingCodec(), deepTfServing()],
      [kserveV2Codec(), deepBytes()],
    ] as const) {
      assert.throws(
        () => codec.readInputs(body),
        (e: Error & { status?: number }) => e.name === 'RequestFormatError' && e.status === 400 && /nested deeper than|dimensions/.test(e.message),
        codec.name,
      );
    }
  });
});

describe('hostile inputs: through the middleware', () => {
  const appFor = (protocol: 'kserve-v2' | 'tf-serving') => {
    const app = express();
    app.use(express.json({ limit: '2mb' }));
    const answer = protocol === 'kserve-v2' ? kserveAnswer() : { predictions: ORIGINAL_ROWS };
    app.post(
      '/infer',
      poisonPredictions({ defense: contextEchoDefense(), protocol, context: uniformSurrogate(3).provider } as ServingOptions<Request>),
      (_req, res) => void res.json(answer),
    );
    return app;
  };

  it('a KServe tensor nested 10,000 levels deep: 400', async () => {
    const res = await request(appFor('kserve-v2')).post('/infer').set('content-type', 'application/json').send(deepKserveText()).expect(400);
    assert.match(res.body.error, /input "image" "data" is nested deeper than 32 levels/);
    assertNoOriginalNumbers(res.text);
  });

  it('a TF Serving instance nested 10,000 levels deep: 400', async () => {
    const res = await request(appFor('tf-serving')).post('/infer').set('content-type', 'application/json').send(deepTfServingText()).expect(400);
    assert.match(res.body.error, /input row 0 is nested deeper than 32 levels/);
    assertNoOriginalNumbers(res.text);
  });

  it('a BYTES tensor of rank 10,001: 400', async () => {
    const res = await request(appFor('kserve-v2')).post('/infer').set('content-type', 'application/json').send(deepBytesText()).expect(400);
    assert.match(res.body.error, /input "image" has 10001 dimensions; at most 32/);
  });

  it('1e400 in the inputs: 400 naming the non-finite value', async () => {
    const res = await request(appFor('kserve-v2')).post('/infer').set('content-type', 'application/json').send(overflowText(4)).expect(400);
    assert.match(res.body.error, NOT_FINITE);
    assertNoOriginalNumbers(res.text);
  });
});

describe('hostile inputs: through the proxy', () => {
  let upstream: StubUpstream;
  let proxy: RunningProxy;
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
    proxy = await startDefenseProxy({ upstream: upstream.url, defense: contextEchoDefense(), context: uniformSurrogate(3).provider, protocol: 'kserve-v2' });
  });
  after(async () => {
    await proxy.close(0);
    await upstream.close();
  });

  // The proxy also refuses such bodies when it serialises what it forwards (proxy/bodies.ts): either refusal is a 400 that names the problem.
  it('nested 10,000 levels deep, rank 10,001, 1e400: each 400 before forwarding', async () => {
    const deep = await request(proxy.url).post('/v2/models/m/infer').set('content-type', 'application/json').send(deepKserveText()).expect(400);
    assert.match(deep.body.error, /input "image" "data" is nested deeper than 32 levels|the request body is nested too deeply/);
    const rank = await request(proxy.url).post('/v2/models/m/infer').set('content-type', 'application/json').send(deepBytesText()).expect(400);
    assert.match(rank.body.error, /has 10001 dimensions; at most 32|the request body is nested too deeply/);
    const overflow = await request(proxy.url).post('/v2/models/m/infer').set('content-type', 'application/json').send(overflowText(4)).expect(400);
    assert.match(overflow.body.error, new RegExp(`${NOT_FINITE.source}|a number out of range`));
    assert.equal(upstream.requests.length, 0, 'the upstream was never called');
  });
});

describe('hostile inputs: the demo app (msd serve)', () => {
  const FEATURES = 16;
  let model: LayersModel;
  let surrogate: Surrogate;
  before(async () => {
    await initBackend({ log: () => {} });
    model = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: 4, seed: 1, hidden: [8] });
    surrogate = Surrogate.random({ arch: 'mlp', inputShape: [FEATURES], classes: 4, seed: 2, hidden: [8] });
  });
  after(() => {
    model.dispose();
    surrogate.dispose();
  });

  for (const batching of [undefined, { windowMs: 1 }]) {
    it(`nested 10,000 levels deep and 1e400: 400, not 500 (${batching ? 'batched' : 'unbatched'} model)`, async () => {
      const demo = buildDemoApp({ model, context: surrogateContext({ surrogate }), batching, processMetrics: false });
      try {
        const deep = await request(demo.app).post('/v2/models/mnist/infer').set('content-type', 'application/json').send(deepKserveText(FEATURES)).expect(400);
        assert.match(deep.body.error, /input "image" "data" is nested deeper than 32 levels/);
        const overflow = await request(demo.app)
          .post('/v2/models/mnist/infer')
          .set('content-type', 'application/json')
          .send(overflowText(FEATURES))
          .expect(400);
        assert.match(overflow.body.error, NOT_FINITE);
        const notJson = await request(demo.app).post('/v2/models/mnist/infer').set('content-type', 'text/plain').send('1, 2, 3').expect(400);
        assert.match(notJson.body.error, /send the request as JSON|expected a JSON object/);
      } finally {
        await demo.close();
      }
    });
  }
});

describe('hostile inputs: finite but extreme, driving the surrogate out of range', () => {
  const features = 16;
  let surrogate: Surrogate;
  before(async () => {
    await initBackend({ log: () => {} });
    surrogate = Surrogate.random({ arch: 'mlp', inputShape: [features], classes: 4, seed: 2, hidden: [8] });
  });
  after(() => surrogate.dispose());

  it('a 400, never the argmax fallback that would hand out the true top-1 label', async () => {
    // The route answers probabilities whose top-1 (class 1) MAD with a non-argmax oracle may move.
    const answer = { predictions: [[0.1, 0.6, 0.2, 0.1]] };
    const app = express();
    app.use(express.json());
    app.post(
      '/v1/models/m:predict',
      poisonPredictions({ defense: 'mad:eps=1.5', protocol: 'tf-serving', context: surrogateContext({ surrogate }), onFailure: 'argmax' }),
      (_req, res) => void res.json(answer),
    );
    // ±3e38 are finite float32 values (past the input check), yet the surrogate's activations overflow.
    const extreme = Array.from({ length: features }, (_, i) => (i % 2 ? -3e38 : 3e38));
    const res = await request(app)
      .post('/v1/models/m:predict')
      .send({ instances: [extreme] });
    assert.equal(res.status, 400, res.text);
    assert.match(res.body.error, /the inputs drive the surrogate out of range/);
    assertNoOriginalNumbers(res.text);
  });
});
