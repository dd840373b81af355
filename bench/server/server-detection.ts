/**
 * Throughput of the defense proxy (rounding, stub upstream) with client detection off, on with the
 * memory store, and on with a real redis-server (started here on a free loopback port), with
 * autocannon over --connections connections and --clients distinct API keys. Ratios are against
 * "detection off" in the same invocation; target ≥ 0.8× with the memory store. Each request is one
 * 784-pixel UINT8 image (its inputs are observed too) answered with 10 probabilities.
 *
 * All proxies run at once and are loaded in turn, --rounds times: on a shared machine one run's req/s
 * moves with other load, so each mode is compared with the "off" run of the same round and the
 * median of those ratios is printed. "cpu µs/req" is the proxy process's CPU time per request;
 * "cpu ×off" is off's CPU per request over this mode's (1.0 = no added CPU).
 * "memory, no inputs" is observeInputs: false (detectors see probabilities only). "redis, no cache" is
 * the Redis store with cachedClients: 0 (a read before every update, three round trips a request
 * instead of two), the baseline of its cache. "+ population" adds detection above the client:
 * cohorts by IP prefix (every request comes from 127.0.0.1: one hot cohort) and population detection
 * (all and young identities); "+ above" adds fingerprints shared across identities too. Every
 * request carries its own image, as distinct benign queries would: the fingerprint store grows and
 * matches nothing. The stub's answer is unsure (max 0.55) and always class 3, so population
 * detection is in alarm and answers young clients with the probation tier (argmax).
 *
 * With --upstream model the proxies stand in front of the demo's MNIST MLP (tfjs on this machine's backend,
 * served undefended over KServe V2, in its own process on the same cores) instead of the stub: the ratio
 * an owner sees when the model does real work per request. The stub is the proxy's worst case.
 *
 * With --cpu-prof DIR each proxy writes V8 CPU profiles into DIR/<mode>/ when the benchmark ends.
 *
 *   npm run bench -- server-detection [--connections 32] [--seconds 3] [--rounds 5] [--clients 1000] [--modes off,memory,memory+above,...] [--upstream stub|model] [--cpu-prof DIR]
 */
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { startChild, stopChild, type Started } from '../children/_start-child.js';
import { startRedis } from '../../test/server/helpers/redis-server.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const connections = Number(args.get('connections') ?? 32);
const seconds = Number(args.get('seconds') ?? 3);
const clientCount = Number(args.get('clients') ?? 1000);
const rounds = Number(args.get('rounds') ?? 5);
const child = fileURLToPath(new URL('../children/_detection-child.ts', import.meta.url));
const PATH = '/v2/models/mnist/infer';
/**
 * Request n's body: its own image (about a fifth of the pixels inked, at places and values drawn from
 * n), as distinct benign queries are: their fingerprints match nothing and the store grows.
 */
function bodyOf(n: number): string {
  const data = new Array<number>(784);
  let h = (n + 1) * 0x9e3779b1;
  for (let i = 0; i < 784; i++) {
    h = Math.imul(h ^ (h >>> 15), 0x85ebca6b) >>> 0;
    data[i] = h % 5 === 0 ? (h >>> 8) % 256 : 0;
  }
  return JSON.stringify({ inputs: [{ name: 'image', shape: [1, 784], datatype: 'UINT8', data }] });
}

const profileDir = args.get('cpu-prof');
const upstreamKind = args.get('upstream') ?? 'stub';
if (upstreamKind !== 'stub' && upstreamKind !== 'model') throw new Error(`--upstream: "stub" or "model", not "${upstreamKind}"`);

function start(role: 'stub' | 'model' | 'proxy', upstream = '', mode = ''): Promise<Started> {
  // One folder per mode: every thread of the proxy (tsx's loader has one) writes its own profile.
  const profile = role === 'proxy' && profileDir ? ['--cpu-prof', '--cpu-prof-dir', `${profileDir}/${mode.replace(/[^a-z+-]/gi, '_')}`] : [];
  return startChild(child, [role, upstream, mode], role, profile);
}

// A profiling proxy is stopped with SIGINT, on which it exits normally and writes its profile.
const stop = (started: Started): void => {
  if (!profileDir) {
    stopChild(started);
    return;
  }
  started.process.removeAllListeners('exit');
  started.process.kill('SIGINT');
};

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
        setupRequest: (req) => {
          const i = n++;
          return { ...req, body: bodyOf(i), headers: { ...req.headers, 'content-type': 'application/json', 'x-api-key': `bench-key-${i % clientCount}` } };
        },
      },
    ],
  });
  const cpu = (await cpuOf(target)) - cpuBefore;
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    failed: result.errors + result.timeouts + result.non2xx,
    cpuPerRequest: cpu / Math.max(1, result.requests.total),
  };
}

const redis = await startRedis();
const upstream = await start(upstreamKind);
const ALL_MODES: [string, string, string][] = [
  ['off', 'off', 'off'],
  ['memory store', 'memory', 'memory'],
  ['memory, no inputs', 'memory-noinputs', 'memory-noinputs'],
  ['memory + population', 'memory+population', 'memory+population'],
  ['memory + above', 'memory+above', 'memory+above'],
  ['redis store', 'redis', redis.url],
  ['redis, no cache', 'redis-nocache', `${redis.url}#nocache`],
  ['redis + population', 'redis+population', `${redis.url}#population`],
  ['redis + above', 'redis+above', `${redis.url}#above`],
];
const wanted = (args.get('modes') ?? ALL_MODES.map((m) => m[1]).join(',')).split(',');
const MODES: [string, string][] = ALL_MODES.filter(([, key]) => key === 'off' || wanted.includes(key)).map(([label, , mode]) => [label, mode]);
console.log(
  `server-detection: proxy rounding:decimals=3 in front of ${upstreamKind === 'stub' ? 'a stub' : "the demo's MNIST MLP (undefended)"}, ${connections} connections, ${rounds} rounds of ${seconds}s per mode, ${clientCount} API keys, node ${process.version}`,
);
const proxies: Started[] = [];
try {
  for (const [, mode] of MODES) proxies.push(await start('proxy', upstream.url, mode));
  for (const proxy of proxies) await load(proxy, 1); // warm-up
  const figures = MODES.map(() => [] as Awaited<ReturnType<typeof load>>[]);
  for (let round = 0; round < rounds; round++) {
    for (let m = 0; m < MODES.length; m++) figures[m].push(await load(proxies[m], seconds));
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  console.log(
    `${'detection'.padEnd(20)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'×off'.padStart(6)} ${'cpu µs/req'.padStart(11)} ${'cpu ×off'.padStart(9)} failed   (medians over rounds; ×off per round, then the median)`,
  );
  for (let m = 0; m < MODES.length; m++) {
    const f = figures[m];
    const ratio = median(f.map((x, r) => x.rps / figures[0][r].rps));
    const cpuRatio = median(f.map((x, r) => figures[0][r].cpuPerRequest / x.cpuPerRequest));
    console.log(
      `${MODES[m][0].padEnd(20)} ${median(f.map((x) => x.rps))
        .toFixed(0)
        .padStart(8)} ${median(f.map((x) => x.p50))
        .toFixed(1)
        .padStart(7)} ${median(f.map((x) => x.p99))
        .toFixed(1)
        .padStart(7)} ${ratio.toFixed(3).padStart(6)} ${median(f.map((x) => x.cpuPerRequest))
        .toFixed(0)
        .padStart(11)} ${cpuRatio.toFixed(3).padStart(9)} ${f.reduce((a, x) => a + x.failed, 0)}`,
    );
  }
} finally {
  for (const proxy of proxies) stop(proxy);
  stop(upstream);
  await redis.stop();
}
