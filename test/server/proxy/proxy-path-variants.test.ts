/**
 * A path that a model server may read as a defended (or refused) route is never passed through:
 * /V2/models/m/infer, /v2/models/m%2Finfer, //v2/models/m/infer/, /v1/models/m:PREDICT and the like.
 * Requests go over a raw socket, so the path reaches the proxy exactly as written here.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { normalisePath, readPassedPath } from '../../../src/server/proxy/path-normalise.js';
import { createRouteTable } from '../../../src/server/proxy/routes.js';
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
  // Read as ASCII by a server that folds Unicode (NFKC, case mapping, accents dropped) or trims segments.
  '/v2/models/mnist/%EF%BD%89nfer',
  '/v2/models/mnist/%C4%B1nfer',
  '/v2/models/mnist/%C4%B0NFER',
  '/v2/models/mnist/i%CC%81nfer',
  '/v2/models/mnist%EF%BC%8Finfer',
  '/v2/models/mnist/infer%20',
  '/v2/models/mnist/infer.',
  // Cut at a decoded ? or # by a server that decodes before it splits.
  '/v2/models/mnist/infer%3Fx=1',
  '/v2/models/mnist/infer%23x',
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
  '/v1/models/mnist:pred%C4%B1ct',
  '/v1/models/mnist:%EF%BD%90redict',
  '/v1/models/mnist%EF%BC%9Apredict',
  '/v1/models/mnist:predict%3F',
  '/v1/models/mnist:cla%C5%BF%C5%BFify',
];

interface Case {
  protocol: 'kserve-v2' | 'tf-serving';
  variants: string[];
  body: string;
  canonical: string;
  passPrefix: string;
  /** A route passed through (GET), with a non-ASCII model name that reads as nothing defended. */
  passedUnicode: string;
  /** Dot segments that resolve to no defended route, or that a server may resolve to one. */
  dotted: string[];
}

const CASES: Case[] = [
  {
    protocol: 'kserve-v2',
    variants: KSERVE_VARIANTS,
    body: KSERVE_BODY,
    canonical: '/v2/models/mnist/infer',
    passPrefix: '* /v2/*',
    passedUnicode: '/v2/models/caf%C3%A9/ready',
    dotted: [
      '/v2/models/mnist/versions/1/../../mnist/infer',
      '/v2/health/../health/ready',
      '/v2/models/mnist/%EF%BC%8E%EF%BC%8E/ready',
      '/v2/models/mnist/..;/ready',
    ],
  },
  {
    protocol: 'tf-serving',
    variants: TF_VARIANTS,
    body: TF_BODY,
    canonical: '/v1/models/mnist:predict',
    passPrefix: '* /v1/*',
    passedUnicode: '/v1/models/caf%C3%A9',
    dotted: ['/v1/models/mnist/versions/1/../../mnist:predict', '/v1/models/./mnist', '/v1/models/mnist/%2e%2e/mnist'],
  },
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
      for (const target of [c.protocol === 'kserve-v2' ? '/v2/health/ready' : '/v1/models/mnist', '/some/other%2Froute/', '*', c.passedUnicode]) {
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

    it('refuses control and invisible characters in a passed path, encoded or raw, with 400 and forwards nothing', async () => {
      const proxy = await start({ passUnknownRoutes: true });
      const encoded = [
        `${c.canonical}%00.txt`,
        `${c.canonical}%00`,
        `${c.canonical}%2500`,
        `${c.canonical}%0A`,
        `${c.canonical}%7F`,
        `${c.canonical}%C2%85`,
        `${c.canonical.slice(0, -3)}%E2%80%8B${c.canonical.slice(-3)}`,
        '/v2/health/ready%09',
        '/anything%00/else',
      ];
      for (const target of encoded) {
        for (const method of ['POST', 'GET', 'OPTIONS']) {
          const asked = upstream.requests.length;
          const answer = await send(proxy, method, target, method === 'POST' ? c.body : '');
          assert.equal(answer.status, 400, `${method} ${target}: ${answer.body}`);
          assert.match(JSON.parse(answer.body).error, /a control or invisible character in the path.*not passed through/);
          assert.equal(upstream.requests.length, asked, `${method} ${target} reached the upstream`);
          assertNoOriginalNumbers(answer.body);
        }
      }
      // Raw ones: Node's parser refuses them (400) before the proxy sees the request.
      for (const target of [`${c.canonical}\u0000.txt`, `${c.canonical}\u0001`, `${c.canonical}\u007f`]) {
        const asked = upstream.requests.length;
        const answer = await send(proxy, 'POST', target, c.body);
        assert.equal(answer.status, 400, `${JSON.stringify(target)}: ${answer.body}`);
        assert.equal(upstream.requests.length, asked);
        assertNoOriginalNumbers(answer.body);
      }
    });

    it('refuses a passed path with dot segments (400, saying so), whatever they resolve to', async () => {
      const proxy = await start({ passUnknownRoutes: true });
      for (const target of c.dotted) {
        for (const method of ['POST', 'GET']) {
          const asked = upstream.requests.length;
          const answer = await send(proxy, method, target, method === 'POST' ? c.body : '');
          assert.equal(answer.status, 400, `${method} ${target}: ${answer.body}`);
          assert.match(JSON.parse(answer.body).error, /is ambiguous: it holds dot segments/);
          assert.equal(upstream.requests.length, asked, `${method} ${target} reached the upstream`);
        }
      }
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

describe('readPassedPath', () => {
  const readings = (path: string) => {
    const read = readPassedPath(path);
    assert.equal(read.kind, 'read', `${path}: ${JSON.stringify(read)}`);
    return read.kind === 'read' ? read.paths : [];
  };

  it('adds the path as a server that folds Unicode, trims segments or cuts at a decoded ? or # may read it', () => {
    assert.deepEqual(readings('/v2/models/m/infer'), ['/v2/models/m/infer']);
    const cases: [string, string][] = [
      ['/v2/models/m/%EF%BD%89nfer', '/v2/models/m/infer'], // fullwidth i (NFKC)
      ['/v2/models/m/\uFF49nfer', '/v2/models/m/infer'], // the same, raw
      ['/v1/models/m:pred\u0131ct', '/v1/models/m:predict'], // dotless i, upper-cased to I
      ['/v1/models/m:\u212Alassify', '/v1/models/m:klassify'], // the Kelvin sign (NFKC: K)
      ['/v2/models/m/\u0130NFER', '/v2/models/m/infer'], // dotted capital I, its dot dropped
      ['/v2/models/m/i\u0301nfer', '/v2/models/m/infer'], // a combining accent dropped
      ['/v1/models/m\uFF1Apredict', '/v1/models/m:predict'], // fullwidth colon
      ['/v2/models/m\uFF0Finfer', '/v2/models/m/infer'], // fullwidth solidus
      ['/v2/models/m/infer%20', '/v2/models/m/infer'],
      ['/v2/models/m/infer..', '/v2/models/m/infer'],
      ['/v2/models/m/infer%3Fa=b', '/v2/models/m/infer'],
      ['/v2/models/m/infer%23a', '/v2/models/m/infer'],
    ];
    for (const [path, folded] of cases) assert.ok(readings(path).includes(folded), `${path}: ${JSON.stringify(readings(path))}`);
  });

  it('refuses control and invisible characters, encoded or raw, and dot segments, saying which', () => {
    for (const path of ['/a%00b', '/a\u0000b', '/a%2500', '/a%0d%0a', '/a\tb', '/a%7F', '/a%C2%85', '/a%E2%80%8Bb', '/a%EF%BB%BF', '/a%E2%80%AEb']) {
      const read = readPassedPath(path);
      assert.equal(read.kind, 'hidden-character', `${path}: ${JSON.stringify(read)}`);
    }
    for (const path of ['/a/../b', '/a/./b', '/a/%2e%2E/b', '/a/..;/b', '/a\\..\\b', '/a/%EF%BC%8E%EF%BC%8E/b', '/..', '/a/%252e%252e/b']) {
      const read = readPassedPath(path);
      assert.equal(read.kind, 'dot-segments', `${path}: ${JSON.stringify(read)}`);
    }
    assert.equal(readPassedPath('/a/%zz').kind, 'malformed');
    assert.deepEqual(readPassedPath('/a/...b/.c/d.'), { kind: 'read', paths: ['/a/...b/.c/d.', '/a/...b/.c/d'] });
  });

  it('refuses a path encoded more times than a server would decode (each pass costs the whole path), and reads one encoded a few times', () => {
    assert.equal(readPassedPath(`/v2/models/%${'25'.repeat(20)}41`).kind, 'malformed');
    assert.equal(normalisePath(`/v2/models/%${'25'.repeat(20)}41`), undefined);
    assert.ok(readings('/v2/models/%25252541/ready').includes('/v2/models/A/ready'));
  });

  it('a stray % does not stop the second decoding: a route encoded behind it is still seen, an escape that is not UTF-8 refused', () => {
    const route = createRouteTable('kserve-v2', { passUnknownRoutes: true });
    for (const [method, path] of [
      ['POST', '/v2/models/m/infer%253F%25zz'],
      ['POST', '/v2/models/m%252Finfer%253F%25zz'],
    ]) {
      const decision = route(method, path);
      assert.equal(decision.kind, 'refuse', `${method} ${path}: ${JSON.stringify(decision)}`);
    }
    assert.ok(readings('/v2/models/m%252Finfer%25zz').includes('/v2/models/m/infer%zz'));
    assert.equal(readPassedPath('/a/%25C0%25AE/b').kind, 'malformed', 'a double-encoded overlong dot');
    assert.equal(readPassedPath('/a/%25E2%2582/b').kind, 'malformed', 'a cut UTF-8 sequence, encoded twice');
    assert.deepEqual(readings('/files/50%25off'), ['/files/50%off'], 'a stray % on its own passes as it is');
  });

  it('trims a long run of trailing dots as a short one (no backtracking regex)', () => {
    assert.ok(readings(`/v2/models/m${'.'.repeat(5000)}/ready`).includes('/v2/models/m/ready'));
    assert.ok(readings(`/v2/models/${'.'.repeat(5000)}x/ready`).includes(`/v2/models/${'.'.repeat(5000)}x/ready`));
  });
});
