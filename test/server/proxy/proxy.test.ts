import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { createLogger } from '../../../src/server/logger.js';
import { startDefenseProxy, type ProxyOptions, type RunningProxy } from '../../../src/server/proxy.js';
import { assertNoOriginalNumbers, contextEchoDefense, lineCollector, throwingDefense, uniformSurrogate } from '../helpers/fixtures.js';
import { closedPort, SLOW_ANSWER_MS, startStubUpstream, type StubProtocol, type StubUpstream } from '../helpers/stub-upstream.js';

interface ProtocolCase {
  protocol: StubProtocol;
  options: Partial<ProxyOptions>;
  inferPath: string;
  requestBody: unknown;
  /** The defended rows from an answer body. */
  // biome-ignore lint/suspicious/noExplicitAny: answer bodies of three protocols
  rowsOf(body: any): number[][];
  passPaths: string[];
}

const CASES: ProtocolCase[] = [
  {
    protocol: 'kserve-v2',
    options: { protocol: 'kserve-v2' },
    inferPath: '/v2/models/mnist/versions/3/infer',
    requestBody: { inputs: [{ name: 'image', shape: [2, 4], datatype: 'FP32', data: [0, 1, 2, 3, 4, 5, 6, 7] }] },
    rowsOf: (body) => [body.outputs[0].data.slice(0, 3), body.outputs[0].data.slice(3)],
    passPaths: ['/v2/health/ready', '/v2/models/mnist'],
  },
  {
    protocol: 'tf-serving',
    options: { protocol: 'tf-serving' },
    inferPath: '/v1/models/mnist:predict',
    requestBody: {
      instances: [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
      ],
    },
    rowsOf: (body) => body.predictions,
    passPaths: ['/v1/models/mnist', '/v1/models/mnist/metadata'],
  },
  {
    protocol: 'json-path',
    options: {
      protocol: { name: 'json-path', probsPath: 'result.items[*].scores', inputsPath: 'images' },
      inferRoutes: ['POST /predict'],
      passRoutes: ['GET /health'],
    },
    inferPath: '/predict',
    requestBody: {
      images: [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
      ],
    },
    rowsOf: (body) => body.result.items.map((item: { scores: number[] }) => item.scores),
    passPaths: ['/health'],
  },
];

/** Scraped as Prometheus would, with its bearer token. */
const METRICS_TOKEN = 'metrics-token-for-the-tests';

for (const c of CASES) {
  describe(`proxy, ${c.protocol}`, () => {
    let upstream: StubUpstream;
    let proxy: RunningProxy;
    const startProxy = (logs = lineCollector()) =>
      startDefenseProxy({
        upstream: upstream.url,
        defense: 'rounding:decimals=2',
        timeoutMs: SLOW_ANSWER_MS / 3,
        maxBodyBytes: 2048,
        metricsToken: METRICS_TOKEN,
        logger: createLogger({ level: 'info' }, logs.stream),
        ...c.options,
      } as ProxyOptions);
    before(async () => {
      upstream = await startStubUpstream(c.protocol);
      proxy = await startProxy();
    });
    after(async () => {
      await proxy.close();
      await upstream.close();
    });
    const infer = (mode?: string, extra: Record<string, string> = {}, to: RunningProxy = proxy) => {
      const r = request(to.url).post(`${c.inferPath}?trace=1`).set('authorization', 'Bearer secret-token').set(extra);
      if (mode) r.set('x-stub-mode', mode);
      return r.send(c.requestBody as object);
    };

    it('defends the answer of an inference route and forwards method, path, query and headers', async () => {
      const res = await infer().expect(200);
      assert.deepEqual(c.rowsOf(res.body), [
        [0.71, 0.2, 0.09],
        [0.14, 0.64, 0.22],
      ]);
      assertNoOriginalNumbers(res.text);
      // Only an allowlist of the upstream's headers reaches the client (proxy-upstream-errors.test.ts).
      assert.equal(res.headers['x-model-version'], undefined);
      assert.equal(res.headers.etag, undefined, 'the etag of the original body is dropped');
      const seen = upstream.requests.at(-1)!;
      assert.equal(seen.method, 'POST');
      assert.equal(seen.url, `${c.inferPath}?trace=1`);
      assert.equal(seen.headers.authorization, 'Bearer secret-token');
      assert.deepEqual(JSON.parse(seen.body), c.requestBody);
      assert.match(String(seen.headers['x-forwarded-for']), /127\.0\.0\.1/);
    });

    it('drops hop-by-hop headers, including those the Connection header names', async () => {
      await new Promise<void>((resolve, reject) => {
        const body = JSON.stringify(c.requestBody);
        const url = new URL(c.inferPath, proxy.url);
        const req = http.request(
          url,
          {
            method: 'POST',
            headers: {
              connection: 'keep-alive, x-hop',
              'x-hop': '1',
              'keep-alive': 'timeout=5',
              'proxy-authorization': 'x',
              'content-type': 'application/json',
            },
          },
          (res) => {
            res.resume();
            res.on('end', resolve);
          },
        );
        req.on('error', reject);
        req.end(body);
      });
      const seen = upstream.requests.at(-1)!;
      assert.equal(seen.headers['x-hop'], undefined);
      assert.equal(seen.headers['proxy-authorization'], undefined);
      assert.equal(seen.headers['keep-alive'], undefined);
    });

    it('passes health and metadata routes through untouched', async () => {
      for (const path of c.passPaths) {
        const res = await request(proxy.url).get(path).expect(200);
        assert.equal(res.headers['x-upstream'], 'stub');
        assert.equal(upstream.requests.at(-1)!.url, path);
      }
    });

    it('refuses routes it does not know (404), without asking the upstream', async () => {
      const before = upstream.requests.length;
      const res = await request(proxy.url).post('/v1/models/mnist/infer-raw').send({}).expect(404);
      assert.match(res.body.error, /not a route this proxy serves/);
      assert.equal(upstream.requests.length, before);
    });

    it('decodes gzip and brotli answers', async () => {
      for (const encoding of ['gzip', 'br']) {
        const res = await infer(undefined, { 'x-stub-encoding': encoding }).expect(200);
        assert.deepEqual(c.rowsOf(res.body), [
          [0.71, 0.2, 0.09],
          [0.14, 0.64, 0.22],
        ]);
        assert.equal(res.headers['content-encoding'], undefined);
      }
    });

    it('answers 502 when the upstream resets, before or during the answer', async () => {
      for (const mode of ['reset', 'reset-mid-body']) {
        const res = await infer(mode).expect(502);
        assert.match(res.body.error, /unavailable/);
      }
    });

    it('answers 504 when the upstream is slower than the timeout', async () => {
      const res = await infer('slow').expect(504);
      assert.match(res.body.error, new RegExp(`within ${SLOW_ANSWER_MS / 3} ms`));
    });

    it('answers 502 for an answer that is not JSON or that the codec rejects, quoting none of it', async () => {
      for (const mode of ['html', 'bad-shape']) {
        const res = await infer(mode).expect(502);
        assert.match(res.body.error, /model answer/);
        assertNoOriginalNumbers(res.text);
      }
    });

    it('answers 413 for a request body over the limit and 400 for malformed JSON', async () => {
      const big = await request(proxy.url)
        .post(c.inferPath)
        .set('content-type', 'application/json')
        .send(JSON.stringify({ pad: 'x'.repeat(4096) }))
        .expect(413);
      assert.match(big.body.error, /over the limit of 2048/);
      const malformed = await request(proxy.url).post(c.inferPath).set('content-type', 'application/json').send('{"inputs": [').expect(400);
      assert.match(malformed.body.error, /not valid JSON/);
    });

    it('passes the message and status of upstream error answers, but withholds one that carries probabilities', async () => {
      const json = await infer('error-json').expect(503);
      assert.deepEqual(json.body, { error: 'model is loading' });
      // Rewritten as the codec's error body, its text the message (proxy-upstream-errors.test.ts).
      const html = await infer('error-html').expect(502);
      assert.deepEqual(html.body, { error: '<html>bad gateway</html>' });
      const leaky = await infer('error-with-probs').expect(502);
      assert.match(leaky.body.error, /withheld/);
      assertNoOriginalNumbers(leaky.text);
    });

    it('serves its metrics and logs one line per request without probabilities or credentials', async () => {
      // A proxy of its own: the counts and lines below are of the requests this test makes, whatever ran before.
      const logs = lineCollector();
      const own = await startProxy(logs);
      try {
        await infer(undefined, {}, own).expect(200);
        await infer('slow', {}, own).expect(504);
        await request(own.url)
          .post(c.inferPath)
          .set('content-type', 'application/json')
          .send(JSON.stringify({ pad: 'x'.repeat(4096) }))
          .expect(413);
        const text = (await request(own.url).get('/metrics').set('authorization', `Bearer ${METRICS_TOKEN}`).expect(200)).text;
        assert.match(text, /msd_requests_total\{defense="rounding:decimals=2",outcome="defended"\} 1\n/);
        assert.match(text, /msd_requests_total\{defense="rounding:decimals=2",outcome="upstream_timeout"\} 1\n/);
        assert.match(text, /msd_requests_total\{defense="rounding:decimals=2",outcome="too_large"\} 1\n/);
        const perturbed = logs.lines.find((line) => line.outcome === 'defended')!;
        assert.ok(perturbed, `a line with outcome defended among ${logs.raw.join('')}`);
        assert.equal(perturbed.defense, 'rounding:decimals=2');
        assert.equal(perturbed.rows, 2);
        assert.ok(typeof perturbed.meanL1 === 'number' && typeof perturbed.defenseMs === 'number');
        assert.ok(typeof perturbed.responseTime === 'number');
        const raw = logs.raw.join('');
        assertNoOriginalNumbers(raw);
        assert.doesNotMatch(raw, /secret-token/);
      } finally {
        await own.close();
      }
    });
  });
}

describe('proxy, fail-closed and configuration', () => {
  let upstream: StubUpstream;
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
  });
  after(async () => {
    await upstream.close();
  });
  const body = { inputs: [{ name: 'image', shape: [2, 4], datatype: 'FP32', data: [0, 1, 2, 3, 4, 5, 6, 7] }] };

  it('answers 502 when nothing listens upstream', async () => {
    const proxy = await startDefenseProxy({ upstream: `http://127.0.0.1:${await closedPort()}`, defense: 'rounding' });
    try {
      const res = await request(proxy.url).post('/v2/models/mnist/infer').send(body).expect(502);
      assert.match(res.body.error, /unavailable \(ECONNREFUSED\)/);
    } finally {
      await proxy.close();
    }
  });

  it('sends a request again on a new connection when the upstream dropped the idle one it reused', async () => {
    const proxy = await startDefenseProxy({ upstream: upstream.url, defense: 'rounding' });
    try {
      await request(proxy.url).post('/v2/models/mnist/infer').send(body).expect(200);
      const before = upstream.requests.length;
      const res = await request(proxy.url).post('/v2/models/mnist/infer').set('x-stub-mode', 'drop-reused').send(body).expect(200);
      assert.equal(res.body.outputs[0].shape[0], 2);
      assert.equal(upstream.requests.length - before, 2, 'the dropped attempt and the retry both reached the upstream');
    } finally {
      await proxy.close();
    }
  });

  it('fails closed when the defense throws, or answers the label only when configured', async () => {
    const closed = await startDefenseProxy({ upstream: upstream.url, defense: throwingDefense });
    const labelOnly = await startDefenseProxy({ upstream: upstream.url, defense: throwingDefense, onFailure: 'argmax' });
    try {
      const failed = await request(closed.url).post('/v2/models/mnist/infer').send(body).expect(500);
      assert.match(failed.body.error, /withheld/);
      assertNoOriginalNumbers(failed.text);
      const label = await request(labelOnly.url).post('/v2/models/mnist/infer').send(body).expect(200);
      assert.deepEqual(label.body.outputs[0].data, [1, 0, 0, 0, 1, 0]);
    } finally {
      await closed.close();
      await labelOnly.close();
    }
  });

  it('refuses TF Serving :classify, which answers scores it does not defend (501)', async () => {
    const tf = await startStubUpstream('tf-serving');
    const proxy = await startDefenseProxy({ upstream: tf.url, protocol: 'tf-serving', defense: 'rounding' });
    try {
      const res = await request(proxy.url).post('/v1/models/mnist:classify').send({ examples: [] }).expect(501);
      assert.match(res.body.error, /:predict/);
      assert.equal(tf.requests.length, 0);
    } finally {
      await proxy.close();
      await tf.close();
    }
  });

  it('gives a surrogate-based defense the inputs of the forwarded request', async () => {
    const surrogate = uniformSurrogate(3);
    const proxy = await startDefenseProxy({ upstream: upstream.url, defense: contextEchoDefense(), context: surrogate.provider });
    try {
      const res = await request(proxy.url).post('/v2/models/mnist/infer').send(body).expect(200);
      assert.deepEqual(surrogate.calls, [{ rows: 2, cols: 4 }]);
      for (const v of res.body.outputs[0].data) assert.ok(Math.abs(v - 1 / 3) < 1e-6);
      const asked = upstream.requests.length;
      const noInputs = await request(proxy.url).post('/v2/models/mnist/infer').send({ id: 'x' }).expect(400);
      assert.match(noInputs.body.error, /"inputs"/);
      assert.equal(upstream.requests.length, asked, 'refused before the upstream worked on it');
    } finally {
      await proxy.close();
    }
  });

  it('checks its options when built', async () => {
    await assert.rejects(startDefenseProxy({ upstream: 'ftp://x', defense: 'rounding' }), /http:\/\/ or https:\/\//);
    await assert.rejects(startDefenseProxy({ upstream: upstream.url, defense: 'rounding', timeoutMs: -1 }), /timeoutMs must be a positive integer/);
    await assert.rejects(
      startDefenseProxy({ upstream: upstream.url, defense: 'rounding', protocol: { name: 'json-path', probsPath: 'p' } }),
      /pass inferRoutes/,
    );
    await assert.rejects(startDefenseProxy({ upstream: upstream.url, defense: 'rounding', inferRoutes: ['predict'] }), /cannot read route "predict"/);
    await assert.rejects(startDefenseProxy({ upstream: upstream.url, defense: 'rounding', upsteam: 'x' } as never), /unknown option upsteam/);
  });
});
