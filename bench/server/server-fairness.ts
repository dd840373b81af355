/**
 * Does a small request wait behind a large one? The defense proxy (mad-argmax:eps=0.8, its surrogate
 * a functional conv model 32×32×3 → two 3×3 convolutions of 64 channels → global average pooling →
 * 10 classes, re-initialised, batched by the default 32 rows per pass) in front of a stub upstream
 * that does no model work, each in a child process. One client sends a large request (256 images);
 * while it is in flight, another sends one-image requests one after another (a random pause of up to
 * one chunk between them, so they arrive at every phase of a chunk). Reported per mode (surrogate in
 * the proxy's main thread, or in a worker thread as with --surrogate-thread):
 *   chunk      the median duration of a 32-row forward pass during the run (the batcher's unit of turn)
 *   small      a one-image request's latency while the large one is in flight: median, p95, max, in ms
 *              and as a ratio to the chunk (the goal: about one chunk, the one in flight, at worst)
 *   ÷ its chunk  the same latency ÷ the duration of the chunk in flight when the request was sent
 *              (median, max: about 1 at most when it waits for that chunk only)
 *   started    chunks (32-row passes) that started between a small request's sending and the proxy's
 *              answer to it, mean and max: 0 when it went right after the chunk in flight (an
 *              ordering figure, which a chunk slowed by the machine's load does not blur)
 *   alone      the same request through the proxy when nothing else runs; direct: straight to the stub
 *   large      the large request's own latency, against 8 chunks (its surrogate work alone)
 * With --before DIR (another checkout: its src/ and a node_modules, e.g. `mkdir /tmp/before && git
 * archive COMMIT src package.json | tar -x -C /tmp/before && ln -s "$PWD/node_modules" /tmp/before/`),
 * the same runs against that checkout's proxy too, side by side, taking turns with this one so that
 * a drift in the machine's load weighs on both. --timeline last|all prints, for the last trial (or
 * every trial) of each, when each request reached the proxy and was answered, and when each forward
 * pass ran (all processes on one clock).
 *
 *   npm run bench -- server-fairness [--trials 8] [--large 256] [--modes main,thread] [--before DIR] [--timeline last]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { initBackend, saveModel, tf } from '../../src/models/index.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const trials = Number(args.get('trials') ?? 8);
const largeRows = Number(args.get('large') ?? 256);
const modes = (args.get('modes') ?? 'main,thread').split(',') as ('main' | 'thread')[];
const beforeDir = args.get('before');
const timeline = args.get('timeline');
const child = fileURLToPath(new URL('../children/_fairness-child.ts', import.meta.url));
const PATH = '/v2/models/cifar/infer';
const WIDTH = 32 * 32 * 3;

const bodyOf = (rows: number) =>
  JSON.stringify({
    inputs: [{ name: 'image', shape: [rows, 32, 32, 3], datatype: 'FP32', data: Array.from({ length: rows * WIDTH }, (_, i) => ((i * 37) % 256) / 256) }],
  });
const small = bodyOf(1);
const large = bodyOf(largeRows);

interface Started {
  process: ChildProcess;
  url: string;
  /** Forward passes started since the last reset (counted from the child's messages). */
  started: number;
}

function start(script: string, argv: string[]): Promise<Started> {
  return new Promise((resolve, reject) => {
    const proc = fork(script, argv, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const started: Started = { process: proc, url: '', started: 0 };
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`${argv[0]} exited with ${code}`)));
    proc.on('message', (m: { type: string; url?: string }) => {
      if (m.type === 'pass') started.started++;
      if (m.type === 'ready') resolve(Object.assign(started, { url: m.url! }));
    });
  });
}

function stop(started: Started): void {
  started.process.removeAllListeners('exit');
  started.process.kill('SIGTERM');
}

interface Event {
  at: number;
  what: string;
}

function passesOf(started: Started): Promise<{ passes: { ms: number; rows: number }[]; events: Event[] }> {
  return new Promise((resolve) => {
    const onMessage = (m: { type: string; passes: { ms: number; rows: number }[]; events: Event[] }) => {
      if (m.type !== 'passes') return;
      started.process.off('message', onMessage);
      resolve(m);
    };
    started.process.on('message', onMessage);
    started.process.send({ type: 'passes' });
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

/** POSTs `body`; resolves with the status, the milliseconds from the request's start to the answer's last byte, and an error answer's text. */
function post(url: string, body: string): Promise<{ status: number; ms: number; error?: string }> {
  return new Promise((resolve, reject) => {
    const began = performance.now();
    const req = http.request(
      url + PATH,
      { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => res.statusCode !== 200 && chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            ms: performance.now() - began,
            ...(res.statusCode === 200 ? {} : { error: Buffer.concat(chunks).toString('utf8').slice(0, 300) }),
          }),
        );
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

const sorted = (values: number[]) => [...values].sort((a, b) => a - b);
const quantile = (values: number[], q: number) => sorted(values)[Math.min(values.length - 1, Math.floor(q * values.length))];
const median = (values: number[]) => quantile(values, 0.5);

/** A checkout to compare with: the fairness child is copied into its bench/children/ so that it imports that checkout's sources. */
function beforeChild(dir: string): string {
  const root = resolvePath(dir);
  if (!existsSync(join(root, 'src/server/proxy.ts')) || !existsSync(join(root, 'node_modules')))
    throw new Error(`--before ${dir}: expected a checkout with src/server/proxy.ts and node_modules`);
  mkdirSync(join(root, 'bench', 'children'), { recursive: true });
  const copy = join(root, 'bench', 'children', '_fairness-child.ts');
  copyFileSync(child, copy);
  return copy;
}

interface Variant {
  label: string;
  server: Started;
  small: number[];
  alone: number[];
  large: number[];
  chunks: number[];
  /** Per small request: the 32-row passes that started between its sending and its answer. */
  overtaken: number[];
  /** Per small request sent during a chunk: its latency ÷ that chunk's duration. */
  perChunk: number[];
}

const now = () => performance.timeOrigin + performance.now();

/** One trial: the large request, and one-image requests one after another until it is answered; with `timeline`, prints what happened when. */
async function trial(v: Variant, chunkGuessMs: number, timeline: boolean): Promise<void> {
  v.server.process.send({ type: 'reset' });
  const events: Event[] = [];
  const before = v.server.started;
  let done = false;
  events.push({ at: now(), what: 'client: large request sent' });
  const big = post(v.server.url, large).then((r) => {
    done = true;
    events.push({ at: now(), what: 'client: large answered' });
    return r;
  });
  // The small requests start once the large one's surrogate work has (its body read and parsed).
  while (v.server.started === before && !done) await sleep(1);
  const spans: [number, number][] = [];
  while (!done) {
    const sent = now();
    events.push({ at: sent, what: 'client: small request sent' });
    const one = await post(v.server.url, small);
    events.push({ at: now(), what: `client: small answered, ${one.ms.toFixed(0)} ms` });
    if (one.status !== 200) throw new Error(`${v.label}: small request answered ${one.status} ${one.error}`);
    if (!done) {
      v.small.push(one.ms);
      spans.push([sent, now()]);
    }
    await sleep(Math.random() * chunkGuessMs);
  }
  const answered = await big;
  if (answered.status !== 200) throw new Error(`${v.label}: large request answered ${answered.status} ${answered.error}`);
  v.large.push(answered.ms);
  const reported = await passesOf(v.server);
  for (const pass of reported.passes) if (pass.rows === 32) v.chunks.push(pass.ms);
  // Chunks that started between a small request's sending and the proxy's answer to it: 0 when it
  // went right after the one in flight. (One small request at a time: the next small answer is its own.)
  const chunkStarts = reported.events.filter((e) => e.what === 'pass of 32 rows starts').map((e) => e.at);
  const chunkEnds = reported.events.filter((e) => e.what === 'pass of 32 rows ends').map((e) => e.at);
  const smallAnswers = reported.events.filter((e) => e.what === `proxy: answer to ${Buffer.byteLength(small)} B sent`).map((e) => e.at);
  for (const [sent, received] of spans) {
    const answered = smallAnswers.find((at) => at > sent) ?? Infinity;
    v.overtaken.push(chunkStarts.filter((at) => at > sent && at < answered).length);
    // Against the very chunk it arrived during (a loaded machine makes some chunks much slower than the median).
    const inFlight = chunkStarts.findIndex((start, c) => start <= sent && (chunkEnds[c] ?? Infinity) > sent);
    if (inFlight >= 0 && chunkEnds[inFlight] !== undefined) v.perChunk.push((received - sent) / (chunkEnds[inFlight] - chunkStarts[inFlight]));
  }
  if (timeline) {
    const all = [...events, ...reported.events].sort((a, b) => a.at - b.at);
    console.log(`\ntimeline, ${v.label} (ms):`);
    for (const e of all) console.log(`${(e.at - all[0].at).toFixed(1).padStart(9)}  ${e.what}`);
  }
}

await initBackend({ log: () => {} });
const scratch = mkdtempSync(join(tmpdir(), 'msd-bench-fairness-'));
const servers: Started[] = [];
try {
  // A functional (not Sequential) conv model, saved once; every proxy loads it re-initialised (seed 7).
  const input = tf.input({ shape: [32, 32, 3] });
  let x = tf.layers.conv2d({ filters: 64, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 64, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 10 }).apply(x) as tf.SymbolicTensor });
  const surrogateDir = join(scratch, 'surrogate');
  await saveModel(model, surrogateDir);
  model.dispose();

  const upstream = await start(child, ['upstream']);
  servers.push(upstream);
  const checkouts: [string, string][] = [['this', child]];
  if (beforeDir) checkouts.unshift(['before', beforeChild(beforeDir)]);
  const variants: Variant[] = [];
  for (const mode of modes) {
    for (const [name, script] of checkouts) {
      const server = await start(script, ['proxy', upstream.url, mode, surrogateDir]);
      servers.push(server);
      variants.push({
        label: `${name}, ${mode === 'main' ? 'main thread' : 'worker thread'}`,
        server,
        small: [],
        alone: [],
        large: [],
        chunks: [],
        overtaken: [],
        perChunk: [],
      });
    }
  }
  console.log(
    `server-fairness: node ${process.version}; conv surrogate 32×32×3 → 2×conv3×3(64) → 10, mad-argmax, 32 rows per pass; large request ${largeRows} images (${(large.length / 2 ** 20).toFixed(1)} MiB of JSON), small 1 image; ${trials} trials per mode`,
  );

  // Warm-up: kernels, the worker threads, and two keep-alive connections per proxy (a connection
  // accepted during a chunk computed in the main thread is read one chunk later: not measured here).
  const direct: number[] = [];
  for (const v of variants) {
    await Promise.all([post(v.server.url, large), post(v.server.url, small)]);
    for (let i = 0; i < 5; i++) await post(v.server.url, small);
  }
  for (let i = 0; i < 20; i++) {
    direct.push((await post(upstream.url, small)).ms);
    for (const v of variants) v.alone.push((await post(v.server.url, small)).ms);
  }
  for (const v of variants) await passesOf(v.server); // (drained)
  for (let t = 0; t < trials; t++)
    for (const v of variants) await trial(v, v.chunks.length ? median(v.chunks) : 150, timeline === 'all' || (timeline === 'last' && t === trials - 1));

  console.log(`one-image request straight to the stub upstream: median ${median(direct).toFixed(1)} ms`);
  console.log(
    `\n${'proxy'.padEnd(24)} ${'chunk ms'.padStart(8)} │ ${'small during large, ms (× chunk)'.padEnd(44)} ${'n'.padStart(4)} │ ${'÷ its chunk'.padStart(13)} │ ${'chunks started'.padStart(14)} │ ${'alone'.padStart(6)} │ ${'large ms (× 8 chunks)'.padStart(22)}`,
  );
  console.log(
    `${''.padEnd(24)} ${''.padStart(8)} │ ${'median'.padStart(14)} ${'p95'.padStart(14)} ${'max'.padStart(14)} ${''.padStart(4)} │ ${'median'.padStart(6)} ${'max'.padStart(6)} │ ${'mean'.padStart(6)} ${'max'.padStart(7)} │ ${''.padStart(6)} │`,
  );
  const cell = (ms: number, chunk: number) => `${ms.toFixed(0)} (${(ms / chunk).toFixed(2)}×)`.padStart(14);
  for (const v of variants) {
    const chunk = median(v.chunks);
    const largeMs = median(v.large);
    console.log(
      `${v.label.padEnd(24)} ${chunk.toFixed(0).padStart(8)} │ ${cell(median(v.small), chunk)} ${cell(quantile(v.small, 0.95), chunk)} ${cell(Math.max(...v.small), chunk)} ${String(v.small.length).padStart(4)} │ ${median(v.perChunk).toFixed(2).padStart(6)} ${Math.max(
        ...v.perChunk,
      )
        .toFixed(2)
        .padStart(
          6,
        )} │ ${(v.overtaken.reduce((a, b) => a + b, 0) / v.overtaken.length).toFixed(2).padStart(6)} ${String(Math.max(...v.overtaken)).padStart(7)} │ ${median(v.alone).toFixed(1).padStart(6)} │ ${`${largeMs.toFixed(0)} (${(largeMs / ((chunk * largeRows) / 32)).toFixed(2)}×)`.padStart(22)}`,
    );
  }
} finally {
  servers.forEach(stop);
  agent.destroy();
  rmSync(scratch, { recursive: true, force: true });
}
