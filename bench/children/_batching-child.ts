/**
 * A child process of the batching benchmark: the demo model server (784-256-128-10 MLP victim, MAD
 * with a random MLP surrogate of the same shape) in one of two modes:
 *   sync     as before batching: one synchronous forward pass per request (victim and surrogate)
 *   batched  both forward passes through the batcher (defaults: 2 ms window, 32 rows per pass; WINDOW ms if given)
 * It sends {type: "ready", url}, and answers {type: "lag"} with the event-loop delay (ms) measured
 * since the last {type: "reset"}.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { asyncSurrogate, createModel, initBackend, Surrogate } from '../../src/models/index.js';
import { batchedSurrogateContext } from '../../src/server/batching/batched-context.js';
import { buildDemoApp } from '../../src/demo/app.js';
import { surrogateContext } from '../../src/server/surrogate-context.js';

const [mode, defense, window] = process.argv.slice(2) as ['sync' | 'batched', string, string | undefined];
const batching = window === undefined ? {} : { windowMs: Number(window) };
await initBackend({ log: () => {} });
const model = createModel({ arch: 'mlp', inputShape: [784], classes: 10, seed: 1 });
const surrogate = Surrogate.random({ arch: 'mlp', inputShape: [784], classes: 10, seed: 2 });
const context =
  defense === 'none'
    ? undefined
    : mode === 'sync'
      ? surrogateContext({ surrogate })
      : batchedSurrogateContext({ surrogate: asyncSurrogate(surrogate) }, batching);
const { app } = buildDemoApp({ model, defense, context, processMetrics: false, ...(mode === 'batched' ? { batching } : {}) });
const server = await new Promise<Server>((resolve) => {
  const s = app.listen(0, '127.0.0.1', () => resolve(s));
});
const lag = monitorEventLoopDelay({ resolution: 1 });
lag.enable();
process.on('message', (message: { type: string }) => {
  if (message.type === 'reset') lag.reset();
  if (message.type === 'lag') process.send!({ type: 'lag', p50: lag.percentile(50) / 1e6, p99: lag.percentile(99) / 1e6, max: lag.max / 1e6 });
});
process.send!({ type: 'ready', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
