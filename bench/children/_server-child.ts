/**
 * A child process of the server benchmarks. Roles:
 *   stub   a KServe V2 stub that answers fixed probabilities (no model work: the proxy's worst case)
 *   model  the demo model server running a 784-256-128-10 MLP per request (defense "none")
 *   proxy  the defense proxy in front of UPSTREAM with DEFENSE
 *   minimal a reference: the least a JSON-reading proxy does (read, parse, forward, parse, write), no defense
 * It sends {type: "ready", url} once listening, answers {type: "memory"} with its heap (after a
 * full GC) and tfjs tensor count, and {type: "cpu"} with the CPU microseconds it has used.
 */
import http, { type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createModel, initBackend, tf } from '../../src/models/index.js';
import { buildDemoApp } from '../../src/demo/app.js';
import { startDefenseProxy } from '../../src/server/proxy.js';
import { startStubUpstream } from '../../test/server/helpers/stub-upstream.js';
import { benchContext } from './_server-context.js';

const [role, upstream, defense] = process.argv.slice(2);
const CLASSES = 10;
const row = Array.from({ length: CLASSES }, (_, c) => (c === 3 ? 0.55 : 0.45 / (CLASSES - 1)));

async function memory(): Promise<{ numTensors: number; heapUsed: number }> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  return { numTensors: tf.memory().numTensors, heapUsed: process.memoryUsage().heapUsed };
}

let url: string;
if (role === 'stub') {
  url = (await startStubUpstream('kserve-v2', [row], { record: false })).url;
} else if (role === 'model') {
  await initBackend({ log: () => {} });
  // Untrained weights cost the same forward pass as trained ones.
  const model = createModel({ arch: 'mlp', inputShape: [784], classes: CLASSES, seed: 1 });
  const { app } = buildDemoApp({ model, defense: 'none' });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
} else if (role === 'minimal') {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      JSON.parse(raw.toString('utf8'));
      const headers = { 'content-type': 'application/json', 'content-length': raw.length };
      const forward = http.request({ hostname: target.hostname, port: target.port, path: req.url, method: req.method, headers, agent }, (answer) => {
        const parts: Buffer[] = [];
        answer.on('data', (c: Buffer) => parts.push(c));
        answer.on('end', () => {
          const text = JSON.stringify(JSON.parse(Buffer.concat(parts).toString('utf8')));
          res.writeHead(answer.statusCode ?? 502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
          res.end(text);
        });
      });
      forward.once('error', () => {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end('{"error":"upstream"}');
      });
      forward.end(raw);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
} else {
  const context = defense.includes('mad') ? await benchContext(CLASSES) : undefined;
  url = (await startDefenseProxy({ upstream, defense, context, timeoutMs: 10_000 })).url;
}
// Exit normally on SIGINT, so that --cpu-prof can write its profile.
process.on('SIGINT', () => process.exit(0));
process.on('message', (message: { type: string }) => {
  if (message.type === 'memory') void memory().then((m) => process.send!({ type: 'memory', ...m }));
  if (message.type === 'cpu') {
    const { user, system } = process.cpuUsage();
    process.send!({ type: 'cpu', micros: user + system });
  }
});
process.send!({ type: 'ready', url });
