/**
 * A path that a model server may read as a defended (or refused) route is never passed through:
 * /V2/models/m/infer, /v2/models/m%2Finfer, //v2/models/m/infer/, /v1/models/m:PREDICT and the like.
 * Requests go over a raw socket, so the path reaches the proxy exactly as written here.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { normalisePath } from '../../../src/server/proxy/path-normalise.js';
import { startDefenseProxy, type ProxyOptions, type RunningProxy } from '../../../src/server/proxy.js';
import { assertNoOriginalNumbers } from '../helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

interface Answer {
  status: number;
  body: string;
}

/** One request over a raw socket, the target as given. */
function send(proxy: RunningProxy, method: string, target: string, body = ''): Promise<Answer> {
  const { port } = new URL(proxy.url);
  return new Promise((resolve, reject) => {
    let text = '';
    const socket = net.connect(Number(port), '127.0.0.1', () => {
      const length = body === '' && method !== 'POST' ? '' : `Content-Length: ${Buffer.byteLength(body)}\r\n`;
      socket.write(`${method} ${target} HTTP/1.1\r\nHost: model\r\nContent-Type: application/json\r\n${length}Connection: close\r\n\r\n${body}`);
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (!status) return reject(new Error(`no HTTP answer: ${JSON.stringify(text)}`));
      resolve({ status: Number(status[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
  });
}

const KSERVE_BODY = JSON.stringify({ inputs: [{ name: 'image', shape: [2, 4], datatype: 'FP32', data: [0, 1, 2, 3, 4, 5, 6, 7] }] });
const TF_BODY = JSON.stringify({ instances: [[0, 1, 2, 3]] });

const KSERVE_VARIANTS = [
  '/v2/models/mnist%2Finfer',
  '/v2/models/mnist%2finfer',
  '/v2/models/mnist%252Finfer',
  '/V2/models/mnist/infer',
  '/v2/MODELS/mnist/INFER',
  '//v2/models/mnist/infer',
  '/v2//models/mnist/infer',
  '/v2/models/mnist/infer/',
  '/v2/models/mnist/versions/3/infer/',
  '/v2/models/mnist/./infer',
  '/v2/models/mnist/../mnist/infer',
  '/v2/models/x/..%2Fmnist/infer',
  '/v2/models/mnist/%2e/infer',
  '/v2/models/mnist/infer;x',
  '/v2/models/mnist/infer#x',
  '/v2\\models\\mnist\\infer',
  'http://model/v2/models/mnist/infer',
];

const TF_VARIANTS = [
  '/v1/models/mnist:PREDICT',
  '/v1/models/mnist:Predict',
  '/V1/models/mnist:predict',
  '/v1/models/mnist%3Apredict',
  '/v1/models/mnist:predict/',
  '//v1/models/mnist:predict',
  '/v1/models/x/../mnist:predict',
  '/v1/models/mnist/versions/3:predict/',
  // Refused routes (501 as written): not passed as variants either.
  '/v1/models/mnist:Classify',
  '/v1/models/mnist:CLASSIFY',
  '/v1/models/mnist%3aclassify',
  '/v1/models/mnist:classify/',
  '/v1/models/mnist:REGRESS',
];

interface Case {
  protocol: 'kserve-v2' | 'tf-serving';
  variants: string[];
  body: string;
  canonical: string;
  passPrefix: string;
}

const CASES: Case[] = [
  { protocol: 'kserve-v2', variants: KSERVE_VARIANTS, body: KSERVE_BODY, canonical: '/v2/models/mnist/infer', passPrefix: '* /v2/*' },
  { protocol: 'tf-serving', variants: TF_VARIANTS, body: TF_BODY, canonical: '/v1/models/mnist:predict', passPrefix: '* /v1/*' },
];

for (const c of CASES) {
  describe(`proxy path variants, ${c.protocol}`, () => {
    let upstream: StubUpstream;
    const proxies: RunningProxy[] = [];
    const start = async (options: Partial<ProxyOptions>): Promise<RunningProxy> => {
      const proxy = await startDefenseProxy({ upstream: upstream.url, protocol: c.protocol, defense: 'rounding:decimals=1', ...options });
      proxies.push(proxy);
      return proxy;
    };
    before(async () => {
      upstream = await startStubUpstream(c.protocol);
    });
    after(async () => {
      for (const proxy of proxies) await proxy.close();
      await upstream.close();
    });

    /** Every variant is answered 4xx (`status` when given), never reaches the upstream, and holds no original value. */
    async function refusesAll(proxy: RunningProxy, status?: number): Promise<void> {
      for (const target of c.variants) {
        for (const method of ['POST', 'GET']) {
          const asked = upstream.requests.length;
          const answer = await send(proxy, method, target, method === 'POST' ? c.body : '');
          assert.ok(answer.status >= 400 && answer.status < 500, `${method} ${target}: ${answer.status} ${answer.body}`);
          if (status !== undefined) assert.equal(answer.status, status, `${method} ${target}: ${answer.body}`);
          assert.equal(upstream.requests.length, asked, `${method} ${target} reached the upstream`);
          assertNoOriginalNumbers(answer.body);
        }
      }
    }

    it('with --pass-unknown-routes: 400, saying the path is ambiguous, and nothing forwarded', async () => {
      const proxy = await start({ passUnknownRoutes: true });
      await refusesAll(proxy, 400);
      const answer = await send(proxy, 'POST', c.variants[0], c.body);
      assert.match(JSON.parse(answer.body).error, /is ambiguous: a model server may read it as .*not passed through/);
    });

    it('on a pass route prefix: 4xx (400 where the prefix matched) and nothing forwarded', async () => {
      const proxy = await start({ passRoutes: [c.passPrefix] });
      await refusesAll(proxy);
      const answer = await send(proxy, 'POST', `${c.canonical}/`, c.body);
      assert.equal(answer.status, 400, answer.body);
    });

    it('without pass routes: 4xx and nothing forwarded', async () => {
      await refusesAll(await start({}));
    });

    it('still defends the canonical route and passes paths that read as nothing defended', async () => {
      const proxy = await start({ passUnknownRoutes: true });
      const defended = await send(proxy, 'POST', c.canonical, c.body);
      assert.equal(defended.status, 200, defended.body);
      assertNoOriginalNumbers(defended.body);
      for (const target of [c.protocol === 'kserve-v2' ? '/v2/health/ready' : '/v1/models/mnist', '/some/other%2Froute/', '*']) {
        const asked = upstream.requests.length;
        await send(proxy, 'GET', target);
        assert.equal(upstream.requests.length, asked + 1, `GET ${target} was passed through`);
        assert.equal(upstream.requests.at(-1)?.url, target, 'forwarded as sent');
      }
      // A CORS preflight carries no inputs: passed even on a variant.
      const asked = upstream.requests.length;
      await send(proxy, 'OPTIONS', `${c.canonical}/`);
      assert.equal(upstream.requests.length, asked + 1);
    });

    it('refuses a malformed percent-escape on a passed path with 400', async () => {
      const proxy = await start({ passUnknownRoutes: true });
      for (const target of ['/v2/health%zz', '/anything%', `${c.canonical}%E0%A4%A`]) {
        const asked = upstream.requests.length;
        const answer = await send(proxy, 'GET', target);
        assert.equal(answer.status, 400, `${target}: ${answer.body}`);
        assert.match(JSON.parse(answer.body).error, /malformed percent-escape/);
        assert.equal(upstream.requests.length, asked);
      }
    });
  });
}

describe('proxy path variants, json-path', () => {
  it('does not pass a variant of an --infer-route', async () => {
    const upstream = await startStubUpstream('json-path');
    const proxy = await startDefenseProxy({
      upstream: upstream.url,
      protocol: { name: 'json-path', probsPath: 'result.items[*].scores', inputsPath: 'images' },
      inferRoutes: ['POST /Predict'],
      passUnknownRoutes: true,
      defense: 'rounding',
    });
    try {
      for (const target of ['/predict', '/PREDICT/', '//Predict', '/x/../Predict', '/%50redict']) {
        const answer = await send(proxy, 'POST', target, '{"images":[[1,2]]}');
        assert.equal(answer.status, 400, `${target}: ${answer.body}`);
        assertNoOriginalNumbers(answer.body);
      }
      assert.equal(upstream.requests.length, 0);
    } finally {
      await proxy.close();
      await upstream.close();
    }
  });
});

describe('normalisePath', () => {
  it('reads a path as a lenient server might', () => {
    const cases: [string, string | undefined][] = [
      ['/v2/models/m/infer', '/v2/models/m/infer'],
      ['/v2/models/m%2Finfer', '/v2/models/m/infer'],
      ['/v2/models/m%2finfer', '/v2/models/m/infer'],
      ['/v2/models/m%252Finfer', '/v2/models/m/infer'],
      ['/V2/Models/M/Infer/', '/V2/Models/M/Infer'],
      ['//v2///models/m/infer//', '/v2/models/m/infer'],
      ['/v2/models/m/./x/../infer', '/v2/models/m/infer'],
      ['/../../v2/models/m/infer', '/v2/models/m/infer'],
      ['/v2/models/m/infer;a=b', '/v2/models/m/infer'],
      ['/v2/models/m/..;/m/infer', '/v2/models/m/infer'],
      ['/v2/models/m/infer#frag', '/v2/models/m/infer'],
      ['/v2\\models\\m\\infer', '/v2/models/m/infer'],
      ['http://host:8080/v2/models/m/infer', '/v2/models/m/infer'],
      ['/v1/models/m%3APREDICT', '/v1/models/m:PREDICT'],
      ['/', '/'],
      ['*', '/*'],
      ['/100%25/ready', '/100%/ready'],
      ['/v2/models/m/infer%', undefined],
      ['/v2/%zz/infer', undefined],
    ];
    for (const [path, read] of cases) assert.equal(normalisePath(path), read, path);
  });
});
