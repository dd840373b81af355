/**
 * Fuzzing the inference routes as a thief would: fast-check draws request bodies (well-formed,
 * hostile, nested, non-finite, smuggled requests inside) and framings (Content-Length, chunked, both,
 * headers named in Connection), sends them over raw sockets, each followed by an ordinary request on
 * the same connection. Whatever comes back: never one of the model's original numbers, and never a
 * 5xx for a client's mistake. Targets: the proxy in front of a real Node model server, and the
 * middleware mounted in an Express app.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import fc from 'fast-check';
import { startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { ORIGINAL_DIGITS, kserveAnswer } from '../helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

const INFER = '/v2/models/mnist/infer';
const RUNS = 120;

/** Sends raw bytes (the last request asks the server to close) and returns everything it wrote before closing. */
function exchange(port: number, bytes: Buffer, deadlineMs = 8000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${deadlineMs} ms; got: ${Buffer.concat(chunks).toString('latin1').slice(0, 400)}`));
    }, deadlineMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.write(bytes);
  });
}

const statuses = (raw: string): number[] => [...raw.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));

function assertNothingLeaked(raw: string, what: string): void {
  for (const digits of ORIGINAL_DIGITS) assert.ok(!raw.includes(digits), `${what}: an original value (…${digits}) reached the client:\n${raw.slice(0, 1200)}`);
  for (const status of statuses(raw)) assert.ok(status < 500, `${what}: a ${status} for a client's request:\n${raw.slice(0, 1200)}`);
}

const goodBody = (rows = 1) => ({ inputs: [{ name: 'image', shape: [rows, 4], datatype: 'FP32', data: Array.from({ length: rows * 4 }, (_, i) => i / 10) }] });

const smuggled = (path: string) => {
  const body = JSON.stringify(goodBody());
  return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

const nested = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;

/** Request bodies, as text: what a client might send to an inference or pass-through route. */
const bodyText = fc.oneof(
  fc.constant(JSON.stringify(goodBody())),
  fc.integer({ min: 1, max: 3 }).map((r) => JSON.stringify(goodBody(r))),
  fc.json({ maxDepth: 4 }),
  fc.string({ maxLength: 60 }),
  fc.integer({ min: 100, max: 20_000 }).map((d) => `{"inputs":[{"name":"image","shape":[1,4],"datatype":"FP32","data":${nested(d)}}]}`),
  fc.constantFrom('1e400', '-1e400', 'NaN', 'Infinity').map((v) => `{"inputs":[{"name":"image","shape":[1,4],"datatype":"FP32","data":[${v},0,0,0]}]}`),
  fc.constant(
    '{"inputs":[{"name":"image","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"inputs":[{"name":"image","shape":[1,4],"datatype":"FP32","data":[9,9,9,9]}]}',
  ),
  fc.constant('{"__proto__":{"polluted":1},"inputs":[]}'),
  fc.constant(smuggled(INFER)),
  fc.constant(`${JSON.stringify(goodBody())}${smuggled(INFER)}`),
);

const framing = fc.constantFrom('content-length', 'chunked', 'both', 'connection-content-length', 'connection-transfer-encoding', 'none');
const method = fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS');
const path = fc.constantFrom(
  INFER,
  `${INFER}?x=1`,
  '/v2/models/mnist/versions/1/infer',
  '/v2/health/ready',
  '/v2/models/mnist',
  '/V2/MODELS/MNIST/INFER',
  '/v2/models/mnist/infer/../infer',
  '//v2/models/mnist/infer',
  '/v2/models/mnist%2Finfer',
  '/unknown',
);

/** The raw request: method, path and body framed one of several ways, then a plain follow-up request on the same connection. */
function rawRequest(m: string, p: string, body: string, frame: string, follow: string): Buffer {
  const data = Buffer.from(body, 'latin1');
  const head = [`${m} ${p} HTTP/1.1`, 'Host: fuzz', 'Content-Type: application/json', 'Connection: keep-alive'];
  let payload = data;
  const chunked = () => Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n0\r\n\r\n')]);
  switch (frame) {
    case 'content-length':
      head.push(`Content-Length: ${data.length}`);
      break;
    case 'chunked':
      head.push('Transfer-Encoding: chunked');
      payload = chunked();
      break;
    case 'both':
      head.push(`Content-Length: ${data.length}`, 'Transfer-Encoding: chunked');
      payload = chunked();
      break;
    case 'connection-content-length':
      head[3] = 'Connection: keep-alive, content-length';
      head.push(`Content-Length: ${data.length}`);
      break;
    case 'connection-transfer-encoding':
      head[3] = 'Connection: keep-alive, transfer-encoding';
      head.push('Transfer-Encoding: chunked');
      payload = chunked();
      break;
    default:
      payload = Buffer.alloc(0);
  }
  const followUp = `GET ${follow} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n`;
  return Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`), payload, Buffer.from(followUp)]);
}

const follow = fc.constantFrom('/v2/health/ready', '/v2/models/mnist');
/** Drawn often on purpose: a body-less method on a pass-through route carrying a whole inference request. */
const smuggling = fc.record({
  method: fc.constantFrom('GET', 'HEAD'),
  path: fc.constantFrom('/v2/health/ready', '/v2/models/mnist', '/v2/health/live'),
  body: fc.constantFrom(smuggled(INFER), smuggled('/v2/models/mnist/versions/1/infer')),
  frame: fc.constantFrom('chunked', 'both', 'connection-content-length', 'connection-transfer-encoding'),
  follow,
});
const cases = fc.oneof({ arbitrary: fc.record({ method, path, body: bodyText, frame: framing, follow }), weight: 3 }, { arbitrary: smuggling, weight: 1 });

describe('fuzzing the proxy in front of a real Node model server', { timeout: 600_000 }, () => {
  let upstream: StubUpstream;
  let proxy: RunningProxy;
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
    proxy = await startDefenseProxy({
      upstream: upstream.url,
      protocol: 'kserve-v2',
      defense: 'rounding:decimals=2',
      timeoutMs: 4000,
      maxBodyBytes: 256 * 1024,
    });
  });
  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  const upstreamInferences = () => upstream.requests.filter((r) => r.method === 'POST' && r.url.includes('/infer')).length;

  it('never returns an original number, never runs an inference the client did not send, never answers a client mistake with a 5xx', async () => {
    const port = Number(new URL(proxy.url).port);
    await fc.assert(
      fc.asyncProperty(cases, async (c) => {
        const inferBefore = upstreamInferences();
        const raw = await exchange(port, rawRequest(c.method, c.path, c.body, c.frame, c.follow));
        assertNothingLeaked(raw, `${c.method} ${c.path} (${c.frame})`);
        // Nothing on the upstream's kept-alive sockets answers a later client: a plain request now
        // gets its own, defended answer.
        const after = await exchange(port, rawRequest('POST', INFER, JSON.stringify(goodBody()), 'content-length', '/v2/health/ready'));
        assertNothingLeaked(after, 'the next client');
        assert.equal(statuses(after)[0], 200, after.slice(0, 400));
        // The upstream ran no inference the client did not send as one (a smuggled request is one:
        // its answer skips the defense and detection even when no client reads it).
        const sent = (c.method === 'POST' ? 1 : 0) + 1;
        assert.ok(
          upstreamInferences() - inferBefore <= sent,
          `${c.method} ${c.path} (${c.frame}): the upstream ran ${upstreamInferences() - inferBefore} inferences for ${sent} sent`,
        );
      }),
      { numRuns: RUNS },
    );
  });
});

describe('fuzzing the middleware in an Express app', { timeout: 600_000 }, () => {
  let server: http.Server;
  let port: number;
  before(async () => {
    const app = express();
    app.use(express.json({ limit: '256kb' }));
    const defend = poisonPredictions({ defense: 'rounding:decimals=2', protocol: 'kserve-v2' });
    app.post(INFER, defend, (_req, res) => {
      res.json(kserveAnswer([[0.7123457, 0.2034567, 0.0841976]]));
    });
    app.get('/v2/health/ready', (_req, res) => {
      res.json({ ready: true });
    });
    // The app's own error handler (express.json's parse errors): JSON, no stack.
    app.use((error: { status?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(error.status ?? 500).json({ error: 'bad request' });
    });
    server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('never returns an original number, never answers a client mistake with a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(cases, async (c) => {
        const raw = await exchange(port, rawRequest(c.method, c.path, c.body, c.frame, c.follow));
        assertNothingLeaked(raw, `${c.method} ${c.path} (${c.frame})`);
      }),
      { numRuns: RUNS },
    );
  });
});
