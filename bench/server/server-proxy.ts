/**
 * Throughput and latency of a model server direct versus through the defense proxy, on loopback,
 * with autocannon: proxy `none`, `rounding` and MAD-argmax with a random MLP surrogate (its forward
 * pass included). Each request is one MNIST-sized image (784 UINT8 pixels) answered with 10
 * probabilities. Two upstreams: a stub that answers fixed numbers (no model work, so the ratio is
 * the proxy's worst case) and the demo model server running a 784-256-128-10 MLP per request.
 * For each: saturated (--connections, as fast as possible) and at a fixed rate below saturation
 * (--rate requests/s over the same connections), where the added latency is the proxy's own.
 * "minimal JSON proxy" is a reference, not a product: the least any proxy that reads the JSON does
 * (read, parse, forward, parse, serialise) with no defense, routes or fault handling; the gap
 * between it and "direct" is the cost of a second HTTP hop in Node, which no defense layer can remove.
 * "cpu µs/req" is the CPU time the measured process (the upstream for "direct", the proxy otherwise)
 * spent per request during the saturated run: on a shared machine it moves far less than req/s.
 * The upstream, the proxy and the load generator run in separate processes; ratios are against the
 * direct run of the same invocation. Then a soak: --soak requests through the MAD proxy, with its
 * heap (after GC) and tfjs tensor count before and after.
 *
 *   npm run bench -- server-proxy [--connections 32] [--seconds 10] [--rate 100] [--soak 10000] [--upstreams stub,model]
 */
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { startChild, stopChild, type Started } from '../children/_start-child.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const connections = Number(args.get('connections') ?? 32);
const seconds = Number(args.get('seconds') ?? 10);
const rate = Number(args.get('rate') ?? 100);
const soakRequests = Number(args.get('soak') ?? 10_000);
const upstreams = (args.get('upstreams') ?? 'stub,model').split(',') as ('stub' | 'model')[];
const child = fileURLToPath(new URL('../children/_server-child.ts', import.meta.url));
const DEFENSES = ['none', 'rounding:decimals=3', 'mad-argmax:eps=0.8'];

const PATH = '/v2/models/mnist/infer';
const body = JSON.stringify({ inputs: [{ name: 'image', shape: [1, 784], datatype: 'UINT8', data: Array.from({ length: 784 }, (_, i) => (i * 37) % 256) }] });

function start(role: 'stub' | 'model' | 'proxy' | 'minimal', upstream = '', defense = ''): Promise<Started> {
  return startChild(child, [role, upstream, defense], role, ['--expose-gc']);
}

const stop = stopChild;

function ask<T>(started: Started, type: 'memory' | 'cpu'): Promise<T> {
  return new Promise((resolve) => {
    const onMessage = (message: { type: string }) => {
      if (message.type !== type) return;
      started.process.off('message', onMessage);
      resolve(message as T);
    };
    started.process.on('message', onMessage);
    started.process.send({ type });
  });
}
const memoryOf = (started: Started) => ask<{ numTensors: number; heapUsed: number }>(started, 'memory');
const cpuOf = async (started: Started) => (await ask<{ micros: number }>(started, 'cpu')).micros;

interface Figures {
  rps: number;
  p50: number;
  p99: number;
  failed: number;
  /** CPU microseconds per request spent by the measured process (less sensitive to other load than req/s). */
  cpuPerRequest: number;
}

async function load(target: Started, options: { duration?: number; amount?: number; overallRate?: number }): Promise<Figures> {
  const cpuBefore = await cpuOf(target);
  const result = await autocannon({ url: target.url + PATH, method: 'POST', headers: { 'content-type': 'application/json' }, body, connections, ...options });
  const cpu = (await cpuOf(target)) - cpuBefore;
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    failed: result.errors + result.timeouts + result.non2xx,
    cpuPerRequest: cpu / Math.max(1, result.requests.total),
  };
}

const ms = (v: number) => v.toFixed(2).padStart(7);
console.log(
  `server-proxy: ${connections} connections, ${seconds}s per run, fixed rate ${rate} req/s, node ${process.version}; one 784-pixel UINT8 image per request, K = 10`,
);
console.log("figures are autocannon's: req/s the mean per second, latency percentiles in ms (1 ms resolution)");

for (const kind of upstreams) {
  const upstream = await start(kind);
  try {
    await load(upstream, { duration: 2 }); // warm-up
    const direct = await load(upstream, { duration: seconds });
    const directAtRate = await load(upstream, { duration: seconds, overallRate: rate });
    console.log(`\nupstream: ${kind === 'stub' ? 'stub (fixed answer, no model work)' : 'demo model server (MLP forward per request)'}`);
    console.log(
      `${'route'.padEnd(30)} ${'req/s'.padStart(8)} ${'p50'.padStart(7)} ${'p99'.padStart(7)} ${'×direct'.padStart(8)} ${'cpu µs/req'.padStart(11)} │ at ${rate} req/s: ${'p50'.padStart(7)} ${'p99'.padStart(7)} ${'+p50'.padStart(7)} ${'+p99'.padStart(7)} │ failed`,
    );
    const line = (name: string, f: Figures, r: Figures) =>
      console.log(
        `${name.padEnd(30)} ${f.rps.toFixed(0).padStart(8)} ${ms(f.p50)} ${ms(f.p99)} ${(f.rps / direct.rps).toFixed(3).padStart(8)} ${f.cpuPerRequest.toFixed(0).padStart(11)} │ ${' '.repeat(4 + String(rate).length + 7)}${ms(r.p50)} ${ms(r.p99)} ${ms(r.p50 - directAtRate.p50)} ${ms(r.p99 - directAtRate.p99)} │ ${f.failed + r.failed}`,
      );
    line('direct', direct, directAtRate);
    for (const defense of ['minimal', ...DEFENSES]) {
      const proxy = defense === 'minimal' ? await start('minimal', upstream.url) : await start('proxy', upstream.url, defense);
      try {
        await load(proxy, { duration: 2 });
        const saturated = await load(proxy, { duration: seconds });
        const atRate = await load(proxy, { duration: seconds, overallRate: rate });
        line(defense === 'minimal' ? 'minimal JSON proxy (reference)' : `proxy ${defense}`, saturated, atRate);
        if (kind === upstreams[0] && defense.startsWith('mad') && soakRequests > 0) {
          const before = await memoryOf(proxy);
          const soak = await load(proxy, { amount: soakRequests });
          const afterSoak = await memoryOf(proxy);
          console.log(
            `  soak: ${soakRequests} more requests through proxy ${defense}: ${soak.failed} failed; tfjs tensors ${before.numTensors} → ${afterSoak.numTensors}; heap after GC ${(before.heapUsed / 2 ** 20).toFixed(1)} → ${(afterSoak.heapUsed / 2 ** 20).toFixed(1)} MiB`,
          );
        }
      } finally {
        stop(proxy);
      }
    }
  } finally {
    stop(upstream);
  }
}
