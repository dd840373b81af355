/**
 * Request smuggling through the proxy, with raw sockets against a real Node http upstream: a body on
 * a pass-through GET (framed by Transfer-Encoding, or by a Content-Length the Connection header asks
 * to drop) must never reach the upstream as a second request, and no client may ever receive the
 * answer of such a request (the model's undefended probabilities).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createDefenseProxy, startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';

/** Digits only the model's raw answer holds; the defense (rounding to 2 decimals) never writes them. */
const RAW_PROBS = [0.7123457, 0.2034567, 0.0841976];
const RAW_MARK = '7123457';

interface ModelStub {
  port: number;
  /** Every request the model server parsed: "METHOD path", with its headers and body. */
  seen: { line: string; headers: http.IncomingHttpHeaders; body: string }[];
  close(): Promise<void>;
}

async function startModelStub(): Promise<ModelStub> {
  const seen: ModelStub['seen'] = [];
  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ line: `${req.method} ${req.url}`, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const json = (status: number, value: unknown): void => {
        const text = JSON.stringify(value);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      };
      // Inference takes a moment, as on a real model server: its answer comes after the GET's.
      if (req.method === 'POST' && req.url === '/v2/models/m/infer')
        return void setTimeout(
          () => json(200, { model_name: 'm', outputs: [{ name: 'probabilities', shape: [1, 3], datatype: 'FP32', data: RAW_PROBS }] }),
          15,
        );
      if ((req.method === 'GET' || req.method === 'HEAD') && req.url?.startsWith('/v2/health/')) return json(200, { ready: true });
      if (req.method === 'POST' && req.url === '/v2/repository/index') return json(200, { received: Buffer.concat(chunks).length });
      return json(404, { error: `no route ${req.method} ${req.url}` });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const INFER_BODY = JSON.stringify({ inputs: [{ name: 'x', shape: [1, 2], datatype: 'FP32', data: [1, 2] }] });
/** A whole inference request, as an attacker hides it in a body. */
const SMUGGLED = `POST /v2/models/m/infer HTTP/1.1\r\nHost: model\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(INFER_BODY)}\r\n\r\n${INFER_BODY}`;
const PLAIN_GET = 'GET /v2/health/ready HTTP/1.1\r\nHost: proxy\r\n\r\n';

/** The attack requests: a pass-through GET whose body is SMUGGLED, framed in several ways. */
const ATTACKS: Record<string, string> = {
  'Transfer-Encoding: chunked': `GET /v2/health/ready HTTP/1.1\r\nHost: proxy\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(SMUGGLED).toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`,
  'Connection: content-length': `GET /v2/health/ready HTTP/1.1\r\nHost: proxy\r\nConnection: keep-alive, content-length\r\nContent-Length: ${Buffer.byteLength(SMUGGLED)}\r\n\r\n${SMUGGLED}`,
  'Connection: transfer-encoding': `GET /v2/health/ready HTTP/1.1\r\nHost: proxy\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(SMUGGLED).toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`,
  'Content-Length and Transfer-Encoding': `GET /v2/health/ready HTTP/1.1\r\nHost: proxy\r\nContent-Length: ${Buffer.byteLength(SMUGGLED) + 12}\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(SMUGGLED).toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`,
  'HEAD, Content-Length': `HEAD /v2/health/ready HTTP/1.1\r\nHost: proxy\r\nContent-Length: ${Buffer.byteLength(SMUGGLED)}\r\n\r\n${SMUGGLED}`,
};

interface Pacing {
  /** Wait before the first payload. */
  startMs?: number;
  /** Wait between the first payload and the second (otherwise: until the answers go quiet). */
  firstGapMs?: number;
  /** Answers to wait for after the last payload (otherwise: until they go quiet, or the connection closes). */
  answers?: number;
}

/** How long answers must be quiet before the next payload goes; an upper bound on one exchange. */
const QUIET_MS = 100;
const DEADLINE_MS = 5000;

/**
 * Writes the payloads on one connection, paced as `pacing` says; resolves with everything the proxy
 * sent back once the expected answers are in, the connection closed, or (no count given) it went quiet.
 */
function converse(port: number, payloads: string[], pacing: Pacing = {}): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    let sent = 0;
    let done = false;
    let quiet: NodeJS.Timeout | undefined;
    const deadline = setTimeout(() => finish(), DEADLINE_MS);
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(quiet);
      clearTimeout(deadline);
      socket.destroy();
      resolve(text);
    };
    const lastSent = (): boolean => sent === payloads.length;
    const next = (): void => {
      if (lastSent()) {
        if (pacing.answers === undefined) finish();
        return;
      }
      socket.write(payloads[sent]);
      sent += 1;
      arm(sent === 1 && pacing.firstGapMs !== undefined ? pacing.firstGapMs : QUIET_MS);
    };
    const arm = (ms = QUIET_MS): void => {
      clearTimeout(quiet);
      quiet = setTimeout(next, ms);
    };
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (lastSent() && pacing.answers !== undefined && statuses(text).length >= pacing.answers) {
        // The last answer's status line is in: a moment more for the rest of it.
        clearTimeout(quiet);
        quiet = setTimeout(finish, 30);
        return;
      }
      // Until the second payload is out, its gap stands.
      if (sent !== 1 || pacing.firstGapMs === undefined) arm();
    });
    socket.on('error', () => {});
    socket.on('close', finish);
    socket.once('connect', () => setTimeout(next, pacing.startMs ?? 0));
  });
}

/** The status codes of the HTTP answers in a raw exchange. */
const statuses = (text: string): number[] => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

describe('proxy: no request smuggling through pass-through routes', () => {
  let model: ModelStub;
  let proxy: RunningProxy;
  let port: number;
  before(async () => {
    model = await startModelStub();
    proxy = await startDefenseProxy({
      upstream: `http://127.0.0.1:${model.port}`,
      defense: 'rounding:decimals=2',
      passRoutes: ['POST /v2/repository/index'],
      maxBodyBytes: 4096,
    });
    port = Number(new URL(proxy.url).port);
  });
  after(async () => {
    await proxy.close();
    await model.close();
  });

  const smuggledSince = (from: number): number => model.seen.slice(from).filter((r) => r.line.startsWith('POST /v2/models/m/infer')).length;

  for (const [name, attack] of Object.entries(ATTACKS)) {
    it(`a GET/HEAD with a body (${name}) is refused; its body never reaches the model, its answer no client`, async () => {
      const before = model.seen.length;
      const attacks: string[] = [];
      const others: string[] = [];
      // The smuggled request's answer comes a moment after the GET's: plain GETs sent just after the
      // attack, on the same connection and on others, are the ones that would receive it.
      for (const delay of [0, 1, 2, 4, 6, 8, 10, 15, 25]) {
        const [attacked, ...plain] = await Promise.all([
          converse(port, [attack, PLAIN_GET, PLAIN_GET], { firstGapMs: delay }),
          converse(port, [PLAIN_GET + PLAIN_GET, PLAIN_GET], { startMs: delay, answers: 3 }),
          converse(port, [PLAIN_GET], { startMs: delay + 2, answers: 1 }),
        ]);
        attacks.push(attacked);
        others.push(...plain);
      }
      for (const text of [...attacks, ...others]) assert.ok(!text.includes(RAW_MARK), `a client received the undefended probabilities:\n${text}`);
      assert.equal(smuggledSince(before), 0, 'the smuggled inference request reached the model');
      for (const text of attacks) assert.equal(statuses(text)[0], 400, `the attack itself is refused with 400:\n${text}`);
      // Plain requests from the other connections went on being served.
      for (const text of others) assert.ok(statuses(text).length > 0 && statuses(text).every((s) => s === 200), text);
      assert.ok(
        model.seen.slice(before).every((r) => r.line === 'GET /v2/health/ready' && r.body === ''),
        JSON.stringify(model.seen.slice(before)),
      );
    });
  }

  it('answers the refusal of a GET with a body as JSON, and closes that connection', async () => {
    const text = await converse(port, [ATTACKS['Transfer-Encoding: chunked']], { answers: 1 });
    assert.match(text, /^HTTP\/1\.1 400 /);
    assert.match(text, /connection: close/i);
    assert.match(text, /"error":"[^"]*body[^"]*"/);
  });

  it('still passes a GET with "Content-Length: 0" through, on a connection of its own', async () => {
    const text = await converse(port, ['GET /v2/health/ready HTTP/1.1\r\nHost: proxy\r\nContent-Length: 0\r\n\r\n'], { answers: 1 });
    assert.deepEqual(statuses(text), [200]);
    // On a connection of its own, closed after the answer: nothing it leaves there meets another request.
    assert.equal(model.seen.at(-1)!.headers.connection, 'close');
  });

  it('refuses a Connection header that names a framing header, on any route', async () => {
    const infer = `POST /v2/models/m/infer HTTP/1.1\r\nHost: proxy\r\nConnection: content-length\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(INFER_BODY)}\r\n\r\n${INFER_BODY}`;
    const before = model.seen.length;
    const text = await converse(port, [infer], { answers: 1 });
    assert.equal(statuses(text)[0], 400, text);
    assert.equal(model.seen.length, before);
  });

  it('a Connection header cannot remove the headers that matter (authorization, content-type), only others', async () => {
    const text = await converse(
      port,
      [
        'GET /v2/health/ready HTTP/1.1\r\nHost: proxy\r\nConnection: keep-alive, authorization, content-type, host, x-hop\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\nX-Hop: 1\r\n\r\n',
      ],
      { answers: 1 },
    );
    assert.deepEqual(statuses(text), [200], text);
    const seen = model.seen.at(-1)!;
    assert.equal(seen.headers.authorization, 'Bearer t');
    assert.equal(seen.headers['content-type'], 'application/json');
    assert.equal(seen.headers['x-hop'], undefined);
    assert.equal(seen.headers['x-forwarded-host'], 'proxy');
  });

  it('re-frames a pass-through body with its own Content-Length, never the client’s Transfer-Encoding', async () => {
    const payload = JSON.stringify({ ready: true });
    const chunked = `POST /v2/repository/index HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${payload.length.toString(16)}\r\n${payload}\r\n0\r\n\r\n`;
    const text = await converse(port, [chunked], { answers: 1 });
    assert.deepEqual(statuses(text), [200], text);
    const seen = model.seen.at(-1)!;
    assert.equal(seen.line, 'POST /v2/repository/index');
    assert.equal(seen.body, payload);
    assert.equal(seen.headers['content-length'], String(payload.length));
    assert.equal(seen.headers['transfer-encoding'], undefined);
  });

  it('refuses a pass-through body over maxBodyBytes (413) without forwarding it', async () => {
    const before = model.seen.length;
    const big = 'x'.repeat(5000);
    const text = await converse(port, [`POST /v2/repository/index HTTP/1.1\r\nHost: proxy\r\nContent-Length: ${big.length}\r\n\r\n${big}`], { answers: 1 });
    assert.equal(statuses(text)[0], 413, text);
    assert.equal(model.seen.length, before);
  });

  it('an inference request sent chunked reaches the model with our own Content-Length, and its answer is defended', async () => {
    const chunked = `POST /v2/models/m/infer HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(INFER_BODY).toString(16)}\r\n${INFER_BODY}\r\n0\r\n\r\n`;
    const text = await converse(port, [chunked], { answers: 1 });
    assert.deepEqual(statuses(text), [200], text);
    assert.ok(!text.includes(RAW_MARK));
    assert.match(text, /"data":\[0\.71,0\.2,0\.09\]/);
    const seen = model.seen.at(-1)!;
    assert.equal(seen.headers['transfer-encoding'], undefined);
    assert.equal(seen.headers['content-length'], String(Buffer.byteLength(seen.body)));
  });

  it('refuses Content-Length with Transfer-Encoding itself, even behind a lenient parser (insecureHTTPParser)', async () => {
    const handlerOnly = createDefenseProxy({ upstream: `http://127.0.0.1:${model.port}`, defense: 'rounding:decimals=2' });
    const lenient = http.createServer({ insecureHTTPParser: true }, handlerOnly.handler);
    await new Promise<void>((resolve) => lenient.listen(0, '127.0.0.1', resolve));
    const lenientPort = (lenient.address() as AddressInfo).port;
    const before = model.seen.length;
    try {
      const chunk = `${Buffer.byteLength(INFER_BODY).toString(16)}\r\n${INFER_BODY}\r\n0\r\n\r\n`;
      for (const head of ['POST /v2/models/m/infer', 'GET /v2/health/ready']) {
        const text = await converse(
          lenientPort,
          [
            `${head} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: ${chunk.length}\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}`,
          ],
          { answers: 1 },
        );
        assert.equal(statuses(text)[0], 400, text);
        assert.match(text, /both Content-Length and Transfer-Encoding/);
        assert.ok(!text.includes(RAW_MARK));
      }
      assert.equal(model.seen.length, before, 'nothing reached the model');
    } finally {
      lenient.closeAllConnections();
      await new Promise<void>((resolve) => lenient.close(() => resolve()));
      handlerOnly.close();
    }
  });
});
