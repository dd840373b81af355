/**
 * A child process of the fairness benchmark (bench/server/server-fairness.ts). Roles:
 *   upstream  a KServe V2 stub that answers one row of K = 10 probabilities per input row (no model work)
 *   proxy     the defense proxy (mad-argmax:eps=0.8) in front of UPSTREAM, its surrogate the conv model
 *             saved in DIR, re-initialised (seed 7), batched (default options: 32 rows per pass),
 *             in this thread (MODE "main") or in a worker thread (MODE "thread")
 * It sends {type: "ready", url}. The proxy also reports each surrogate forward pass: {type: "pass",
 * rows} when one starts, and answers {type: "passes"} with the durations (ms) and rows of the passes
 * since the last {type: "reset"}.
 *
 * This file imports the sources through relative paths, so that a copy of it placed in another
 * checkout's bench/ (server-fairness --before DIR) runs that checkout's proxy.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { initBackend, loadSurrogate } from '../../src/models/index.js';
import { batchedSurrogateContext, type AsyncProbabilityModel } from '../../src/server/batching/batched-context.js';
import { startDefenseProxy } from '../../src/server/proxy.js';

const [role, upstream, mode, dir] = process.argv.slice(2);
const CLASSES = 10;
const row = Array.from({ length: CLASSES }, (_, c) => (c === 3 ? 0.55 : 0.45 / (CLASSES - 1)));

let url: string;
if (role === 'upstream') {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      // The row count only: parsing megabytes of pixels would be model-server work this stub does not do.
      const rows = Number(/"shape":\[(\d+)/.exec(Buffer.concat(chunks).toString('latin1'))?.[1] ?? 1);
      const data: number[] = [];
      for (let r = 0; r < rows; r++) data.push(...row);
      const text = JSON.stringify({ model_name: 'cifar', outputs: [{ name: 'probabilities', shape: [rows, CLASSES], datatype: 'FP32', data }] });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  // Idle keep-alive connections stay open for the whole run, as the proxy's pool expects of a model server.
  server.keepAliveTimeout = 600_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
} else {
  await initBackend({ log: () => {} });
  const surrogate = await loadSurrogate({ dir, reinit: 7, thread: mode === 'thread' });
  const passes: { ms: number; rows: number }[] = [];
  // The same model, each forward pass timed (in this thread: the compute; threaded: the round trip).
  const timed: AsyncProbabilityModel = {
    classes: surrogate.classes,
    inputShape: surrogate.inputShape,
    differentiable: surrogate.differentiable,
    failure: () => surrogate.failure?.(),
    probsAsync: async (inputs, rows) => {
      process.send!({ type: 'pass', rows });
      const began = performance.now();
      try {
        return await surrogate.probsAsync(inputs, rows);
      } finally {
        passes.push({ ms: performance.now() - began, rows });
      }
    },
  };
  const context = batchedSurrogateContext({ surrogate: timed });
  const running = await startDefenseProxy({ upstream, defense: 'mad-argmax:eps=0.8', context, timeoutMs: 60_000 });
  url = running.url;
  // When each request reached the handler and when its answer was handed to the socket (res.end), and
  // when each forward pass started and ended: ms on the clock all processes share (time origin + now).
  const now = () => performance.timeOrigin + performance.now();
  const events: { at: number; what: string }[] = [];
  running.server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const what = `${req.headers['content-length']} B`;
    events.push({ at: now(), what: `proxy: request ${what} read` });
    const end = res.end;
    res.end = function (this: http.ServerResponse, ...args: unknown[]) {
      events.push({ at: now(), what: `proxy: answer to ${what} sent` });
      return (end as (...a: unknown[]) => http.ServerResponse).apply(this, args);
    } as typeof res.end;
  });
  const timedForward = timed.probsAsync;
  timed.probsAsync = async (inputs, rows) => {
    events.push({ at: now(), what: `pass of ${rows} rows starts` });
    try {
      return await timedForward(inputs, rows);
    } finally {
      events.push({ at: now(), what: `pass of ${rows} rows ends` });
    }
  };
  process.on('message', (message: { type: string }) => {
    if (message.type === 'reset') {
      passes.length = 0;
      events.length = 0;
    }
    if (message.type === 'passes') process.send!({ type: 'passes', passes, events });
  });
}
process.send!({ type: 'ready', url });
