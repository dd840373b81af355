import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { createModel, initBackend, loadSurrogate, saveModel } from '../../../src/models/index.js';
import { exitSurrogateThreadOnNextCall } from '../../../src/models/surrogates/threaded-surrogate.js';
import { batchedSurrogateContext } from '../../../src/server/batching/batched-context.js';
import { startDefenseProxy } from '../../../src/server/proxy.js';
import { scratchDir } from '../../helpers/scratch.js';
import { waitFor, within } from '../../helpers/wait.js';
import { kserveRequest } from '../helpers/fixtures.js';
import { closedPort, SLOW_ANSWER_MS, startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

const PATH = '/v2/models/mnist/infer';

/** One request on `agent` (keep-alive: the same connection across calls). */
function send(
  url: string,
  agent: http.Agent,
  path: string,
  headers: http.OutgoingHttpHeaders = {},
  body?: string,
): Promise<{ status: number; body: string; connection?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}${path}`,
      { method: body === undefined ? 'GET' : 'POST', agent, headers: { 'content-type': 'application/json', ...headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, connection: res.headers.connection }));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

describe('proxy health and graceful shutdown', () => {
  let upstream: StubUpstream;
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
  });
  after(async () => {
    await upstream.close();
  });

  it('answers /healthz and /readyz itself, ready only when the upstream answers its health route', async () => {
    const running = await startDefenseProxy({ upstream: upstream.url, defense: 'argmax' });
    const down = await startDefenseProxy({ upstream: `http://127.0.0.1:${await closedPort()}`, defense: 'argmax' });
    const agent = new http.Agent();
    try {
      assert.deepEqual(JSON.parse((await send(running.url, agent, '/healthz')).body), { status: 'live' });
      const ready = await send(running.url, agent, '/readyz');
      assert.equal(ready.status, 200, ready.body);
      assert.match(JSON.parse(ready.body).upstream, /GET \/v2\/health\/ready answered 200/);
      assert.equal(upstream.requests.filter((r) => r.url === '/healthz').length, 0, 'the proxy’s own health is not forwarded');
      assert.equal((await send(down.url, agent, '/healthz')).status, 200, 'live even when the upstream is down');
      const notReady = await send(down.url, agent, '/readyz');
      assert.equal(notReady.status, 503);
      assert.match(JSON.parse(notReady.body).upstream, /ECONNREFUSED/);
    } finally {
      agent.destroy();
      await running.close();
      await down.close();
    }
  });

  it('on close: the request in flight finishes; one arriving meanwhile is refused (503, or the connection refused)', async () => {
    const running = await startDefenseProxy({ upstream: upstream.url, defense: 'argmax', timeoutMs: SLOW_ANSWER_MS * 2 });
    const slowAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const idleAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      // Opens the keep-alive connection that stays open while the proxy drains.
      assert.equal((await send(running.url, idleAgent, PATH, {}, JSON.stringify(kserveRequest()))).status, 200);
      const seen = upstream.requests.length;
      const inFlight = send(running.url, slowAgent, PATH, { 'x-stub-mode': 'slow' }, JSON.stringify(kserveRequest()));
      // In flight: the proxy has forwarded it, and the upstream holds it for SLOW_ANSWER_MS.
      await waitFor(() => upstream.requests.slice(seen).some((r) => r.headers['x-stub-mode'] === 'slow'), {
        what: 'the upstream to receive the slow request',
        timeoutMs: SLOW_ANSWER_MS,
      });
      const closed = running.close(SLOW_ANSWER_MS * 3);
      // close() stops listening before it returns; a request arriving meanwhile gets 503 or a refused connection.
      const late = await send(running.url, new http.Agent(), PATH, {}, JSON.stringify(kserveRequest())).catch((error: NodeJS.ErrnoException) => ({
        status: 0,
        body: error.code ?? '',
      }));
      assert.ok(late.status === 503 || late.body === 'ECONNREFUSED', `late request: ${late.status} ${late.body}`);
      const answer = await within(inFlight, { what: 'the answer to the request in flight', timeoutMs: SLOW_ANSWER_MS * 3 });
      assert.equal(answer.status, 200, answer.body);
      assert.deepEqual(JSON.parse(answer.body).outputs[0].data, [1, 0, 0, 0, 1, 0]);
      await within(closed, { what: 'the proxy to finish closing', timeoutMs: SLOW_ANSWER_MS * 3 });
    } finally {
      slowAgent.destroy();
      idleAgent.destroy();
    }
  });

  it('refuses new requests with 503 while draining, and /readyz answers draining', async () => {
    const running = await startDefenseProxy({ upstream: upstream.url, defense: 'argmax' });
    const agent = new http.Agent();
    try {
      running.proxy.drain();
      const refused = await send(running.url, agent, PATH, {}, JSON.stringify(kserveRequest()));
      assert.equal(refused.status, 503);
      assert.match(refused.body, /shutting down/);
      assert.equal(refused.connection, 'close');
      const ready = await send(running.url, agent, '/readyz');
      assert.deepEqual([ready.status, JSON.parse(ready.body).status], [503, 'draining']);
    } finally {
      agent.destroy();
      await running.close();
    }
  });

  it('is not ready once its surrogate’s worker thread has died, and defended requests fail closed', async () => {
    await initBackend({ log: () => {} });
    const dir = await scratchDir('msd-proxy-thread-');
    // The stub upstream answers 3 classes for rows of 4 values.
    const model = createModel({ arch: 'mlp', inputShape: [4], classes: 3, seed: 1, hidden: [8] });
    await saveModel(model, dir);
    model.dispose();
    const surrogate = await loadSurrogate({ dir, thread: true });
    const running = await startDefenseProxy({ upstream: upstream.url, defense: 'mad-argmax:eps=0.5', context: batchedSurrogateContext({ surrogate }) });
    const agent = new http.Agent();
    try {
      assert.equal((await send(running.url, agent, '/readyz')).status, 200);
      assert.equal((await send(running.url, agent, PATH, {}, JSON.stringify(kserveRequest()))).status, 200);
      exitSurrogateThreadOnNextCall(surrogate);
      const failed = await send(running.url, agent, PATH, {}, JSON.stringify(kserveRequest()));
      assert.ok(failed.status >= 500, `${failed.status} ${failed.body}`);
      assert.equal(JSON.parse(failed.body).outputs, undefined, 'no probabilities in a failed answer');
      const ready = await send(running.url, agent, '/readyz');
      assert.equal(ready.status, 503);
      assert.equal(JSON.parse(ready.body).status, 'surrogate_unavailable');
      assert.match(JSON.parse(ready.body).surrogate, /exited with code 7/);
    } finally {
      agent.destroy();
      await running.close();
      surrogate.dispose();
    }
  });
});
