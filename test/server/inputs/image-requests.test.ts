/**
 * Base64 images through the middleware and the proxy, per protocol: a defense that needs inputs sees
 * the decoded, preprocessed rows; every bad image is a 400 (413 for bytes) naming the problem, the
 * route's answer never goes out, and the proxy refuses before the upstream is called.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import express, { type Request } from 'express';
import request from 'supertest';
import type { DefenseContext } from '../../../src/defenses/index.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import type { ServingOptions } from '../../../src/server/options.js';
import type { InputRows } from '../../../src/server/protocols/index.js';
import { startDefenseProxy, type ProxyOptions, type RunningProxy } from '../../../src/server/proxy.js';
import { surrogateContext } from '../../../src/server/surrogate-context.js';
import { assertNoOriginalNumbers, contextEchoDefense, kserveAnswer, ORIGINAL_ROWS } from '../helpers/fixtures.js';
import { b64, encode, grayPng, noisePng, pngDeclaring, solidPng, stripes } from '../helpers/images.js';
import { startStubUpstream, type StubProtocol, type StubUpstream } from '../helpers/stub-upstream.js';

const SIZE = 4;
const IMAGE = { width: SIZE, height: SIZE, scale: 1 / 255 };

/** A context provider that records the rows it is given and answers the uniform distribution over 3 classes. */
function recordingSurrogate() {
  const seen: InputRows[] = [];
  const provider = (_needs: readonly string[], inputs: InputRows): DefenseContext => {
    seen.push(inputs);
    return { surrogateProbs: { rows: inputs.rows, cols: 3, data: new Float32Array(inputs.rows * 3).fill(1 / 3) } };
  };
  return { provider, seen };
}

interface Protocol {
  name: StubProtocol;
  options: Partial<ProxyOptions>;
  path: string;
  body(images: string[]): object;
}

const PROTOCOLS: Protocol[] = [
  {
    name: 'kserve-v2',
    options: { protocol: 'kserve-v2' },
    path: '/v2/models/mnist/infer',
    body: (images) => ({ inputs: [{ name: 'image', shape: [images.length], datatype: 'BYTES', data: images }] }),
  },
  {
    name: 'tf-serving',
    options: { protocol: 'tf-serving' },
    path: '/v1/models/mnist:predict',
    body: (images) => ({ instances: images.map((b) => ({ b64: b })) }),
  },
  {
    name: 'json-path',
    options: { protocol: { name: 'json-path', probsPath: 'result.items[*].scores', inputsPath: 'images' }, inferRoutes: ['POST /predict'] },
    path: '/predict',
    body: (images) => ({ images }),
  },
];

interface BadCase {
  what: string;
  second: () => Promise<string>;
  status: number;
  message: RegExp;
}

/** The second of two images is bad; the first is fine, so the error must name image 1. */
const BAD: BadCase[] = [
  { what: 'not an image', second: async () => Buffer.from('{"not": "an image"}').toString('base64'), status: 400, message: /image 1 of .* is not an image/ },
  {
    what: 'a truncated JPEG',
    second: async () => {
      const jpeg = await encode(
        stripes(32, 32, (x) => [x * 8, 90, 40]),
        32,
        32,
        'jpeg',
      );
      return b64(jpeg.subarray(0, jpeg.length >> 1));
    },
    status: 400,
    message: /image 1 of .* is truncated or corrupt/,
  },
  {
    what: 'a PNG header declaring 50000×50000 pixels',
    second: async () => b64(await pngDeclaring(50_000, 50_000)),
    status: 400,
    message: /image 1 of .* is 50000×50000 = 2500000000 pixels, over the limit of 1000000/,
  },
  {
    what: 'a grayscale image where RGB is required (strict)',
    second: async () => b64(await grayPng(8, 8, 7)),
    status: 400,
    message: /image 1 of .* has 1 colour channel \(grayscale\); the model takes 3/,
  },
  { what: 'bad base64', second: async () => 'not base64 at all!', status: 400, message: /image 1 of .* is not valid base64/ },
  {
    what: 'an image over maxImageBytes',
    second: async () => b64(await noisePng(100, 100)),
    status: 413,
    message: /image 1 of .* is \d+ bytes, over the limit of 20000 bytes per image/,
  },
];
const LIMITS = { image: { ...IMAGE, strictChannels: true }, maxPixels: 1_000_000, maxImageBytes: 20_000 };

const redPng = () => solidPng(10, 6, [255, 0, 0]);
const bluePng = () => solidPng(7, 9, [0, 0, 255]);

function assertDecoded(seen: InputRows[]): void {
  assert.equal(seen.length, 1, 'the context provider ran once');
  const [rows] = seen;
  assert.deepEqual([rows.rows, rows.cols, rows.shape], [2, SIZE * SIZE * 3, [SIZE, SIZE, 3]]);
  assert.deepEqual(Array.from(rows.data.subarray(0, 3)), [1, 0, 0], 'row 0 is the red image, scaled to 0..1');
  assert.deepEqual(Array.from(rows.data.subarray(rows.cols, rows.cols + 3)), [0, 0, 1], 'row 1 is the blue image');
}

for (const protocol of PROTOCOLS) {
  describe(`base64 images through the middleware, ${protocol.name}`, () => {
    const routeAnswer =
      protocol.name === 'kserve-v2'
        ? kserveAnswer()
        : protocol.name === 'tf-serving'
          ? { predictions: ORIGINAL_ROWS }
          : { result: { items: ORIGINAL_ROWS.map((scores) => ({ scores })) } };
    const appWith = (options: Partial<ServingOptions<Request>>) => {
      const app = express();
      app.use(express.json({ limit: '2mb' }));
      app.post(
        protocol.path,
        poisonPredictions({ defense: contextEchoDefense(), protocol: protocol.options.protocol, ...options } as ServingOptions<Request>),
        (_req, res) => void res.json(routeAnswer),
      );
      return { app };
    };

    it('gives the defense the decoded rows', async () => {
      const surrogate = recordingSurrogate();
      const { app } = appWith({ context: surrogate.provider, inputs: { image: IMAGE } });
      const res = await request(app)
        .post(protocol.path)
        .send(protocol.body([b64(await redPng()), b64(await bluePng())]))
        .expect(200);
      assertDecoded(surrogate.seen);
      assertNoOriginalNumbers(res.text);
    });

    it('answers a bad image with 400 even when failures fall back to the argmax label', async () => {
      const { app } = appWith({ context: recordingSurrogate().provider, inputs: LIMITS, onFailure: 'argmax' });
      const res = await request(app)
        .post(protocol.path)
        .send(protocol.body(['AAAA']))
        .expect(400);
      assert.match(res.body.error, /the image in .* is not an image/);
      assertNoOriginalNumbers(res.text);
    });

    for (const bad of BAD) {
      it(`answers ${bad.status} for ${bad.what}, never the route's answer`, async () => {
        const surrogate = recordingSurrogate();
        const { app } = appWith({ context: surrogate.provider, inputs: LIMITS });
        const res = await request(app)
          .post(protocol.path)
          .send(protocol.body([b64(await redPng()), await bad.second()]))
          .expect(bad.status);
        assert.match(res.body.error, bad.message);
        assert.equal(surrogate.seen.length, 0, 'the surrogate never ran');
        assertNoOriginalNumbers(res.text);
      });
    }
  });

  describe(`base64 images through the proxy, ${protocol.name}`, () => {
    let upstream: StubUpstream;
    let proxy: RunningProxy;
    const surrogate = recordingSurrogate();
    before(async () => {
      upstream = await startStubUpstream(protocol.name);
      proxy = await startDefenseProxy({
        upstream: upstream.url,
        defense: contextEchoDefense(),
        context: surrogate.provider,
        inputs: LIMITS,
        maxBodyBytes: 1 << 20,
        ...protocol.options,
      } as ProxyOptions);
    });
    after(async () => {
      await proxy.close();
      await upstream.close();
    });

    it('gives the defense the decoded rows, and forwards the request as sent', async () => {
      surrogate.seen.length = 0;
      const body = protocol.body([b64(await redPng()), b64(await bluePng())]);
      const res = await request(proxy.url).post(protocol.path).send(body).expect(200);
      assertDecoded(surrogate.seen);
      assertNoOriginalNumbers(res.text);
      assert.deepEqual(JSON.parse(upstream.requests.at(-1)!.body), body, 'the upstream got the images as the client sent them');
    });

    for (const bad of BAD) {
      it(`refuses ${bad.what} with ${bad.status} before forwarding`, async () => {
        const before = upstream.requests.length;
        surrogate.seen.length = 0;
        const res = await request(proxy.url)
          .post(protocol.path)
          .send(protocol.body([b64(await redPng()), await bad.second()]))
          .expect(bad.status);
        assert.match(res.body.error, bad.message);
        assert.equal(upstream.requests.length, before, 'the upstream was never called');
        assert.equal(surrogate.seen.length, 0);
      });
    }
  });
}

describe('noise keyed by the decoded input', () => {
  it('answers the same for an image sent as a PNG and as the same pixels in a numeric tensor, through the proxy', async () => {
    const upstream = await startStubUpstream('kserve-v2');
    const proxy = await startDefenseProxy({
      upstream: upstream.url,
      defense: 'noise:scale=1',
      noiseSecret: 's3cret',
      context: surrogateContext({}),
      inputs: { image: { width: 2, height: 2 } },
    });
    try {
      const pixels = stripes(2, 2, (x) => (x === 0 ? [10, 200, 30] : [250, 5, 60]));
      const png = b64(await encode(pixels, 2, 2, 'png'));
      const asImage = await request(proxy.url)
        .post('/v2/models/m/infer')
        .send({ inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: [png, png] }] })
        .expect(200);
      // The same pixels as a numeric NCHW tensor: mapped to the declared NHWC before keying.
      const nchw = [0, 1, 2].flatMap((c) => [0, 1, 2, 3].map((p) => pixels[p * 3 + c]));
      const asTensor = await request(proxy.url)
        .post('/v2/models/m/infer')
        .send({ inputs: [{ name: 'image', shape: [2, 3, 2, 2], datatype: 'UINT8', data: [...nchw, ...nchw] }] })
        .expect(200);
      assert.deepEqual(asImage.body.outputs[0].data, asTensor.body.outputs[0].data);
      assertNoOriginalNumbers(asImage.text);
      const other = b64(await solidPng(2, 2, [1, 2, 3]));
      const differs = await request(proxy.url)
        .post('/v2/models/m/infer')
        .send({ inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: [other, other] }] })
        .expect(200);
      assert.notDeepEqual(differs.body.outputs[0].data, asImage.body.outputs[0].data, 'another image, other noise');
    } finally {
      await proxy.close();
      await upstream.close();
    }
  });
});
