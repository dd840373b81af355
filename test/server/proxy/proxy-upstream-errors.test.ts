/**
 * What the model server says beside its answer never carries the original probabilities to the
 * client: its error bodies are rewritten (their message kept, every fractional number masked), a
 * redirect is an upstream fault, and only an allowlist of its headers is forwarded. A client that
 * aborts its upload is counted as a bad request, not as a failure of the defense.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';
import { assertNoOriginalNumbers, kserveAnswer, kserveRequest, ORIGINAL_ROWS } from '../helpers/fixtures.js';

const PATH = '/v2/models/mnist/infer';
const PROBS = ORIGINAL_ROWS.flat();

interface Canned {
  status: number;
  headers: http.OutgoingHttpHeaders;
  body: string;
}

/** The answers this upstream gives, by the request's `x-case` header. */
const CASES: Record<string, Canned> = {
  'value-error': {
    status: 500,
    headers: { 'content-type': 'application/json', 'x-scores': PROBS.join(','), 'retry-after': '3' },
    body: JSON.stringify({ error: `ValueError : postprocess failed on array([${PROBS.join(', ')}]) for input shape [1, 784]` }),
  },
  'html-500': {
    status: 500,
    headers: { 'content-type': 'text/html' },
    body: `<html><body>Internal error: probs=[${PROBS.join(', ')}] at step 3</body></html>`,
  },
  'exponent-503': {
    status: 503,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ message: `overloaded; last scores 7.123457e-1 2e-05 -3.5E+2 array([7.e-01, 1.e-05]) 71% 64 %` }),
  },
  'redirect-tf': {
    status: 307,
    headers: { 'content-type': 'application/json', location: '/elsewhere' },
    body: JSON.stringify({ predictions: ORIGINAL_ROWS }),
  },
  'logits-422': {
    status: 422,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ detail: 'output logits out of range', logits: { name: 'logits', shape: [2, 3], data: PROBS } }),
  },
  'outputs-422': {
    status: 422,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ error: 'bad', outputs: [{ name: 'logits', shape: [2, 3], datatype: 'FP32', data: PROBS }] }),
  },
  'shape-400': {
    status: 400,
    headers: { 'content-type': 'application/json', 'x-scores': PROBS.join(',') },
    body: JSON.stringify({ error: 'input shape [1, 784] expected, got [2, 4]' }),
  },
  'long-text': {
    status: 502,
    headers: { 'content-type': 'text/plain' },
    body: `${'x'.repeat(1000)} ${PROBS.join(' ')}`,
  },
  'no-message': {
    status: 500,
    headers: {},
    body: '',
  },
  ok: {
    status: 200,
    headers: {
      'content-type': 'application/json',
      'x-scores': '0.4,0.35,0.25',
      'repr-digest': 'sha-256=:abc=:',
      'x-request-id': 'req-42',
      'cache-control': 'no-store',
      'retry-after': '3',
      'set-cookie': 'probs=0.7123457',
    },
    body: JSON.stringify(kserveAnswer()),
  },
};

async function startCannedUpstream(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const canned = CASES[String(req.headers['x-case'])] ?? CASES.ok;
      res.writeHead(canned.status, { ...canned.headers, 'content-length': Buffer.byteLength(canned.body) });
      res.end(canned.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

function infer(url: string, which: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${PATH}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-case': which } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.once('error', reject);
    req.end(JSON.stringify(kserveRequest()));
  });
}

/** No original value, in full or as its leading digits, anywhere in the answer (body or headers). */
function assertNothingOriginal(answer: Answer): void {
  const all = `${answer.text}\n${JSON.stringify(answer.headers)}`;
  assertNoOriginalNumbers(all);
  for (const p of PROBS) assert.ok(!all.includes(String(p).slice(0, 5)), `${String(p).slice(0, 5)} in ${all}`);
}

describe('proxy: what the model server says beside its answer', () => {
  let upstream: Awaited<ReturnType<typeof startCannedUpstream>>;
  let proxy: RunningProxy;
  before(async () => {
    upstream = await startCannedUpstream();
    proxy = await startDefenseProxy({ upstream: upstream.url, defense: 'rounding:decimals=2' });
  });
  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  const count = async (outcome: string): Promise<number> => {
    const metric = await proxy.proxy.metrics.registry.getSingleMetric('msd_requests_total')!.get();
    return metric.values.filter((v) => v.labels.outcome === outcome).reduce((sum, v) => sum + v.value, 0);
  };

  it('an upstream 500 quoting the probabilities: its message, every fractional number masked, as a 502', async () => {
    const res = await infer(proxy.url, 'value-error');
    assertNothingOriginal(res);
    assert.equal(res.status, 502);
    assert.equal(res.headers['content-type'], 'application/json');
    const { error } = JSON.parse(res.text);
    assert.match(error, /^ValueError : postprocess failed on array\(\[…, …, …, …, …, …\]\) for input shape \[1, 784\]$/);
    assert.equal(res.headers['x-scores'], undefined);
    assert.equal(res.headers['retry-after'], '3', 'retry-after is kept on an error');
  });

  it('an HTML error page with the probabilities: its text masked, as JSON', async () => {
    const res = await infer(proxy.url, 'html-500');
    assertNothingOriginal(res);
    assert.equal(res.status, 502);
    assert.match(JSON.parse(res.text).error, /Internal error: probs=\[…, …, …, …, …, …\] at step 3/);
  });

  it("a 503 keeps its status; numbers written with an exponent (NumPy's 7.e-01 too) and percentages are masked too", async () => {
    const res = await infer(proxy.url, 'exponent-503');
    assert.equal(res.status, 503);
    const { error } = JSON.parse(res.text);
    assert.equal(error, 'overloaded; last scores … … … array([…, …]) … …');
  });

  it('a redirect (with an answer in its body) is an upstream fault: 502, none of its body', async () => {
    const before = await count('bad_answer');
    const res = await infer(proxy.url, 'redirect-tf');
    assertNothingOriginal(res);
    assert.equal(res.status, 502);
    assert.match(JSON.parse(res.text).error, /redirect/);
    assert.equal(res.headers.location, undefined);
    assert.equal((await count('bad_answer')) - before, 1);
  });

  it('a 4xx keeps its status and its message, never the outputs beside it', async () => {
    const logits = await infer(proxy.url, 'logits-422');
    assertNothingOriginal(logits);
    assert.equal(logits.status, 422);
    assert.deepEqual(JSON.parse(logits.text), { error: 'output logits out of range' });
    const outputs = await infer(proxy.url, 'outputs-422');
    assertNothingOriginal(outputs);
    assert.equal(outputs.status, 502, 'one the codec reads as an answer is withheld');
    assert.match(JSON.parse(outputs.text).error, /withheld/);
    const before = await count('passed_error');
    const shape = await infer(proxy.url, 'shape-400');
    assertNothingOriginal(shape);
    assert.equal(shape.status, 400);
    assert.deepEqual(JSON.parse(shape.text), { error: 'input shape [1, 784] expected, got [2, 4]' });
    assert.equal((await count('passed_error')) - before, 1, 'counted as the model’s own error answer');
  });

  it('a long message is cut; an empty one says what the model server answered', async () => {
    const long = await infer(proxy.url, 'long-text');
    assertNothingOriginal(long);
    assert.equal(long.status, 502);
    assert.ok(JSON.parse(long.text).error.length <= 301, long.text);
    const empty = await infer(proxy.url, 'no-message');
    assert.equal(empty.status, 502);
    assert.match(JSON.parse(empty.text).error, /500/);
  });

  it('a defended answer carries only the allowlisted upstream headers', async () => {
    const res = await infer(proxy.url, 'ok');
    assert.equal(res.status, 200, res.text);
    assertNothingOriginal(res);
    assert.equal(res.headers['x-scores'], undefined);
    assert.equal(res.headers['repr-digest'], undefined);
    assert.equal(res.headers['set-cookie'], undefined);
    assert.equal(res.headers['retry-after'], undefined, 'retry-after only on an error');
    assert.equal(res.headers['x-request-id'], 'req-42');
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.deepEqual(JSON.parse(res.text).outputs[0].data, [0.71, 0.2, 0.09, 0.14, 0.64, 0.22]);
  });

  it('a client that aborts its upload (closed or reset) is a bad request, not a failure of the defense', async () => {
    const { port } = new URL(proxy.url);
    for (const reset of [false, true]) {
      const failedBefore = await count('defense_failed');
      const badBefore = await count('bad_request');
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(Number(port), '127.0.0.1', () => {
          // Content-Length 1000, 10 bytes sent, then the connection goes.
          socket.write(`POST ${PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"inputs":`);
          setTimeout(() => (reset ? socket.resetAndDestroy() : socket.destroy()), 50);
        });
        socket.once('error', reject);
        socket.once('close', () => resolve());
      });
      const deadline = Date.now() + 5000;
      while ((await count('bad_request')) === badBefore && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal((await count('bad_request')) - badBefore, 1, reset ? 'reset' : 'closed');
      assert.equal((await count('defense_failed')) - failedBefore, 0, reset ? 'reset' : 'closed');
    }
  });
});
