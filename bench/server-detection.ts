/**
 * Throughput of the defense proxy (rounding, stub upstream) with client detection off, on with the
 * memory store, and on with a real redis-server (started here on a free loopback port), with
 * autocannon over --connections connections and --clients distinct API keys. Ratios are against
 * "detection off" in the same invocation; target ≥ 0.8× with the memory store. Each request is one
 * 784-pixel UINT8 image (its inputs are observed too) answered with 10 probabilities.
 *
 * The three runs are repeated --repeat times (interleaved, each against the "off" run just before
 * it), since on a shared machine one run's req/s moves with other load; "cpu µs/req" (the proxy
 * process's CPU time per request) moves less.
 *
 *   npm run bench -- server-detection [--connections 32] [--seconds 5] [--clients 1000] [--repeat 2]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { startRedis } from '../test/server/helpers/redis-server.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const connections = Number(args.get('connections') ?? 32);
const seconds = Number(args.get('seconds') ?? 5);
const clientCount = Number(args.get('clients') ?? 1000);
const repeat = Number(args.get('repeat') ?? 2);
const child = fileURLToPath(new URL('./_detection-child.ts', import.meta.url));
const PATH = '/v2/models/mnist/infer';
const body = JSON.stringify({ inputs: [{ name: 'image', shape: [1, 784], datatype: 'UINT8', data: Array.from({ length: 784 }, (_, i) => (i * 37) % 256) }] });

interface Started {
  process: ChildProcess;
  url: string;
}

function start(role: 'stub' | 'proxy', upstream = '', mode = ''): Promise<Started> {
  return new Promise((resolve, reject) => {
    const proc = fork(child, [role, upstream, mode], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`${role} exited with ${code}`)));
    proc.on('message', (message: { type: string; url?: string }) => {
      if (message.type === 'ready') resolve({ process: proc, url: message.url! });
    });
  });
}

function stop(started: Started): void {
  started.process.removeAllListeners('exit');
  started.process.kill('SIGTERM');
}

const cpuOf = (started: Started): Promise<number> =>
  new Promise((resolve) => {
    const onMessage = (message: { type: string; micros?: number }) => {
      if (message.type !== 'cpu') return;
      started.process.off('message', onMessage);
      resolve(message.micros!);
    };
    started.process.on('message', onMessage);
    started.process.send({ type: 'cpu' });
  });

async function load(target: Started, duration: number): Promise<{ rps: number; p50: number; p99: number; failed: number; cpuPerRequest: number }> {
  let n = 0;
  const cpuBefore = await cpuOf(target);
  const result = await autocannon({
    url: target.url + PATH,
    connections,
    duration,
    requests: [
      {
        method: 'POST',
        body,
        setupRequest: (req) => ({ ...req, headers: { ...req.headers, 'content-type': 'application/json', 'x-api-key': `bench-key-${n++ % clientCount}` } }),
      },
    ],
  });
  const cpu = (await cpuOf(target)) - cpuBefore;
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, failed: result.errors + result.timeouts + result.non2xx, cpuPerRequest: cpu / Math.max(1, result.requests.total) };
}

const redis = await startRedis();
const upstream = await start('stub');
console.log(`server-detection: proxy rounding:decimals=3 in front of a stub, ${connections} connections, ${seconds}s per run, ${clientCount} API keys, node ${process.version}`);
console.log(`${'detection'.padEnd(24)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'×off'.padStart(6)} ${'cpu µs/req'.padStart(11)} failed`);
try {
  let baseline = 0;
  const runs = Array.from({ length: repeat }, () => [['off', 'off'], ['memory store', 'memory'], ['memory, no inputs', 'memory-noinputs'], ['redis store', redis.url]]).flat();
  for (const [name, mode] of runs) {
    const proxy = await start('proxy', upstream.url, mode);
    try {
      await load(proxy, 2);
      const f = await load(proxy, seconds);
      if (mode === 'off') baseline = f.rps;
      console.log(`${name.padEnd(24)} ${f.rps.toFixed(0).padStart(8)} ${f.p50.toFixed(1).padStart(7)} ${f.p99.toFixed(1).padStart(7)} ${(f.rps / baseline).toFixed(3).padStart(6)} ${f.cpuPerRequest.toFixed(0).padStart(11)} ${f.failed}`);
    } finally {
      stop(proxy);
    }
  }
} finally {
  stop(upstream);
  await redis.stop();
}
