/**
 * Throughput and latency of a model server direct versus through the defense proxy, on loopback,
 * with autocannon: `none`, `rounding` and MAD-argmax with a surrogate (its forward pass included).
 * Each request is one MNIST-sized image (784 UINT8 pixels) answered with 10 probabilities.
 * The stub, the proxy and the load generator run in separate processes; ratios are against the
 * direct run of the same invocation. Then a soak: 10,000 requests through the MAD proxy, with
 * its heap (after GC) and tfjs tensor count before and after.
 *
 *   npm run bench -- server-proxy [--connections 32] [--seconds 10] [--soak 10000]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const connections = Number(args.get('connections') ?? 32);
const seconds = Number(args.get('seconds') ?? 10);
const soakRequests = Number(args.get('soak') ?? 10_000);
const child = fileURLToPath(new URL('./_server-child.ts', import.meta.url));

const PATH = '/v2/models/mnist/infer';
const body = JSON.stringify({ inputs: [{ name: 'image', shape: [1, 784], datatype: 'UINT8', data: Array.from({ length: 784 }, (_, i) => (i * 37) % 256) }] });

interface Started {
  process: ChildProcess;
  url: string;
}

function start(role: 'stub' | 'proxy', upstream = '', defense = ''): Promise<Started> {
  return new Promise((resolve, reject) => {
    const proc = fork(child, [role, upstream, defense], { execArgv: ['--import', 'tsx', '--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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

function memoryOf(started: Started): Promise<{ numTensors: number; heapUsed: number }> {
  return new Promise((resolve) => {
    const onMessage = (message: { type: string; numTensors: number; heapUsed: number }) => {
      if (message.type !== 'memory') return;
      started.process.off('message', onMessage);
      resolve(message);
    };
    started.process.on('message', onMessage);
    started.process.send({ type: 'memory' });
  });
}

interface Figures {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
}

async function load(url: string, options: { duration?: number; amount?: number }): Promise<Figures> {
  const result = await autocannon({ url: url + PATH, method: 'POST', headers: { 'content-type': 'application/json' }, body, connections, ...options });
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.timeouts, non2xx: result.non2xx };
}

const stub = await start('stub');
try {
  console.log(`server-proxy: ${connections} connections, ${seconds}s per run, node ${process.version}, one 784-pixel image per request, K = 10`);
  await load(stub.url, { duration: 2 }); // warm-up
  const direct = await load(stub.url, { duration: seconds });
  const header = `${'route'.padEnd(40)} ${'req/s'.padStart(9)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'× direct'.padStart(9)} ${'+p99 ms'.padStart(8)} ${'errors'.padStart(7)}`;
  console.log(header);
  const line = (name: string, f: Figures) =>
    console.log(
      `${name.padEnd(40)} ${f.rps.toFixed(0).padStart(9)} ${f.p50.toFixed(2).padStart(7)} ${f.p99.toFixed(2).padStart(7)} ${(f.rps / direct.rps).toFixed(3).padStart(9)} ${(f.p99 - direct.p99).toFixed(2).padStart(8)} ${String(f.errors + f.non2xx).padStart(7)}`,
    );
  line('direct', direct);
  for (const defense of ['none', 'rounding:decimals=3', 'mad-argmax:eps=0.8']) {
    const proxy = await start('proxy', stub.url, defense);
    try {
      await load(proxy.url, { duration: 2 });
      line(`proxy ${defense}`, await load(proxy.url, { duration: seconds }));
      if (defense.startsWith('mad') && soakRequests > 0) {
        const before = await memoryOf(proxy);
        const soak = await load(proxy.url, { amount: soakRequests });
        const afterSoak = await memoryOf(proxy);
        console.log(
          `\nsoak: ${soakRequests} requests through proxy ${defense}: ${soak.errors + soak.non2xx} errors; tfjs tensors ${before.numTensors} → ${afterSoak.numTensors}; heap after GC ${(before.heapUsed / 2 ** 20).toFixed(1)} MiB → ${(afterSoak.heapUsed / 2 ** 20).toFixed(1)} MiB`,
        );
      }
    } finally {
      stop(proxy);
    }
  }
} finally {
  stop(stub);
}
