/**
 * The nsfwjs example server (examples/nsfw-server) under load: nsfwjs's MobileNetV2 answering 224×224
 * JPEGs through TF Serving's REST API, with defense `none` against MAD-argmax (eps 0.8, a re-initialised
 * MobileNetV2 surrogate, batched). Both servers run as child processes, exactly as `npm run
 * example:nsfw` starts them, and are measured in turn at 1, 8 and 32 concurrent clients (autocannon):
 * req/s, client latency p50/p99, the server's event-loop delay p99 (monitorEventLoopDelay at 1 ms
 * resolution, read from its /metrics, which resets it at each scrape) and its CPU seconds per image
 * (process_cpu_seconds_total over the requests answered). The cost ratio MAD-argmax / none per image is
 * the target's measure: MAD-argmax should cost at most one more forward pass of the victim (ratio ≤ 2).
 * The last configuration runs the same surrogate converted to ONNX (SURROGATE_ENGINE=onnx).
 *
 *   npm run bench -- example-nsfw [--seconds 6]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import sharp from 'sharp';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const seconds = Number(args.get('seconds') ?? 6);
const server = fileURLToPath(new URL('../../examples/nsfw-server/server.ts', import.meta.url));
const PATH = '/v1/models/nsfw:predict';
interface Config {
  label: string;
  defense: string;
  surrogateThread: boolean;
  victimThread: boolean;
  /** What runs the surrogate (default tfjs, the victim's own engine). */
  engine?: 'tfjs' | 'onnx';
}
const MAD = 'mad-argmax:eps=0.8';
const CONFIGS: Config[] = [
  { label: 'none', defense: 'none', surrogateThread: false, victimThread: false },
  { label: 'mad-argmax', defense: MAD, surrogateThread: false, victimThread: false },
  { label: 'mad-argmax, S thread', defense: MAD, surrogateThread: true, victimThread: false },
  { label: 'none, V thread', defense: 'none', surrogateThread: false, victimThread: true },
  { label: 'mad-argmax, S+V thr.', defense: MAD, surrogateThread: true, victimThread: true },
  { label: 'mad-argmax, onnx S+V', defense: MAD, surrogateThread: true, victimThread: true, engine: 'onnx' },
];
/** MAD configurations and the `none` each is compared with (same victim placement). */
const RATIOS: Array<[mad: number, none: number]> = [
  [1, 0],
  [2, 0],
  [4, 3],
  [5, 3],
];
const CONCURRENCY = [1, 8, 32];

interface Started {
  process: ChildProcess;
  url: string;
  /** The server's /metrics, on its ops port. */
  metricsUrl: string;
}

function start(config: Config): Promise<Started> {
  return new Promise((resolve, reject) => {
    const env = {
      ...process.env,
      PORT: '0',
      METRICS_PORT: '0',
      DEFENSE: config.defense,
      SURROGATE_THREAD: config.surrogateThread ? '1' : '0',
      VICTIM_THREAD: config.victimThread ? '1' : '0',
      SURROGATE_ENGINE: config.engine ?? 'tfjs',
    };
    const proc = spawn(process.execPath, ['--import', 'tsx', server], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`${config.label} server exited with ${code}`)));
    let out = '';
    proc.stdout!.on('data', (chunk: Buffer) => {
      out += chunk;
      const url = /listening on (http:\/\/\S+)/.exec(out)?.[1];
      const metricsUrl = /metrics on (http:\/\/\S+)/.exec(out)?.[1];
      if (url && metricsUrl) resolve({ process: proc, url, metricsUrl });
    });
  });
}

/** Stops the server as a user would (SIGTERM: drain, free, exit 0) and waits for it to exit. */
function stop(started: Started): Promise<number | null> {
  started.process.removeAllListeners('exit');
  return new Promise((resolve) => {
    started.process.once('exit', resolve);
    started.process.kill('SIGTERM');
  });
}

async function scrape(metricsUrl: string): Promise<{ lagP99: number; cpu: number }> {
  const text = await (await fetch(metricsUrl)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
  return { lagP99: value('msd_nodejs_eventloop_lag_p99_seconds') * 1000, cpu: value('msd_process_cpu_seconds_total') };
}

const raw = Buffer.alloc(224 * 224 * 3);
for (let y = 0; y < 224; y++)
  for (let x = 0; x < 224; x++) raw.set([(x * 255) / 224, (y * 255) / 224, (x * y + ((x * 7) ^ (y * 13))) & 255], (y * 224 + x) * 3);
const jpeg = await sharp(raw, { raw: { width: 224, height: 224, channels: 3 } })
  .jpeg({ quality: 90 })
  .toBuffer();
const body = JSON.stringify({ instances: [{ b64: jpeg.toString('base64') }] });
const post = { method: 'POST' as const, headers: { 'content-type': 'application/json' }, body };

console.log(`example-nsfw: node ${process.version}; one 224×224 JPEG (${jpeg.length} bytes) per request; ${seconds}s per configuration`);
const servers: Started[] = [];
try {
  for (const config of CONFIGS) servers.push(await start(config));
  // Warm-up: the first forward passes compile kernels and allocate.
  for (const s of servers) await autocannon({ url: s.url + PATH, ...post, connections: 2, amount: 6 });
  const cpuPerImage: number[][] = CONFIGS.map(() => []);
  const latencyMean: number[][] = CONFIGS.map(() => []);
  const loopP99: number[][] = CONFIGS.map(() => []);
  console.log(
    '\nS thread: the surrogate in a worker thread; V thread: the victim too (SURROGATE_THREAD=1, VICTIM_THREAD=1); onnx: the surrogate converted to ONNX and run by onnxruntime-node (SURROGATE_ENGINE=onnx), else on TF.js like the victim',
  );
  console.log(
    `\n${'configuration'.padEnd(20)} ${'clients'.padStart(7)} ${'req/s'.padStart(7)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'loop p99'.padStart(9)} ${'CPU ms/img'.padStart(10)} ${'answered'.padStart(8)} ${'non-2xx'.padStart(7)}`,
  );
  for (const connections of CONCURRENCY) {
    for (const [d, s] of servers.entries()) {
      const before = await scrape(s.metricsUrl);
      const r = await autocannon({ url: s.url + PATH, ...post, connections, duration: seconds });
      const after = await scrape(s.metricsUrl);
      const answered = r.requests.total;
      const cpuMs = answered ? ((after.cpu - before.cpu) * 1000) / answered : NaN;
      cpuPerImage[d].push(cpuMs);
      latencyMean[d].push(r.latency.mean);
      loopP99[d].push(after.lagP99);
      console.log(
        `${CONFIGS[d].label.padEnd(20)} ${String(connections).padStart(7)} ${r.requests.average.toFixed(1).padStart(7)} ${String(r.latency.p50).padStart(7)} ${String(r.latency.p99).padStart(7)} ${after.lagP99.toFixed(0).padStart(9)} ${cpuMs.toFixed(0).padStart(10)} ${String(answered).padStart(8)} ${String(r.non2xx).padStart(7)}`,
      );
    }
  }
  console.log('\ncost per image, MAD-argmax / none (target ≤ 2: at most one more victim forward pass):');
  for (const [mad, none] of RATIOS) {
    console.log(`  ${CONFIGS[mad].label} / ${CONFIGS[none].label}:`);
    for (const [i, connections] of CONCURRENCY.entries()) {
      console.log(
        `    ${String(connections).padStart(2)} client(s): server CPU ${(cpuPerImage[mad][i] / cpuPerImage[none][i]).toFixed(2)}×, mean latency ${(latencyMean[mad][i] / latencyMean[none][i]).toFixed(2)}×`,
      );
    }
  }
  console.log('\nevent-loop p99, worst over 1/8/32 clients:');
  for (const [d, config] of CONFIGS.entries()) console.log(`  ${config.label.padEnd(20)} ${Math.max(...loopP99[d]).toFixed(0)} ms`);
} finally {
  const codes = await Promise.all(servers.map(stop));
  console.log(`\nservers stopped with SIGTERM, exit codes ${codes.join(', ')}`);
}
