/**
 * The shadow attacker on the demo's MNIST victim (the MLP `npm run demo` trains and caches).
 *
 *   tradeoff: thief traffic (FashionMNIST images, open world, as `msd eval` queries) and benign
 *     traffic (MNIST test images) through the defended endpoint, every request sampled; one shadow
 *     round once all of it is in; prints the shadow's accuracies (defended / original), agreement,
 *     protection, defended accuracy on the held-out set, and the CPU the round took. MAD-argmax runs
 *     through `msd proxy` (a child process, the demo victim as its upstream, a seeded random MLP
 *     surrogate as `msd eval` uses); adaptive misinformation through the middleware (the proxy loads
 *     no misinformation model), with a misinformation model trained as `msd eval` trains it.
 *   throughput: `msd proxy` (MAD-argmax) in front of the demo victim, with the shadow off and on
 *     (sampling 10% and training continuously during the load, at its default budget), autocannon
 *     on loopback; runs alternate off/on/on/off so that a drift of the shared machine hits both.
 *
 *   node --import tsx bench/server/shadow.ts tradeoff --defense mad-argmax:eps=1 [--thief 10000] [--benign 1000] [--arch cnn] [--epochs 5] [--cpu 0.5]
 *   node --import tsx bench/server/shadow.ts tradeoff --defense misinformation:tau=0.7 [...]
 *   node --import tsx bench/server/shadow.ts throughput [--seconds 10] [--connections 8] [--repeats 2] [--every "300 samples"] [--cpu 0.25]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import express from 'express';
import { parseDefense } from '../../src/defenses/index.js';
import { buildDemoApp } from '../../src/demo/app.js';
import { loadOrTrainDemoVictim } from '../../src/demo/victim.js';
import { encodeNpy } from '../../src/eval/data/npy.js';
import { defaultCacheRoot, loadDataset } from '../../src/eval/world/datasets.js';
import { createModel, initBackend, predictProbs, saveModel, trainModel, type LayersModel } from '../../src/models/index.js';
import { createLogger } from '../../src/server/logger.js';
import { poisonPredictions } from '../../src/server/middleware.js';
import { kserveV2Codec } from '../../src/server/protocols/index.js';
import { surrogateContext } from '../../src/server/surrogate-context.js';

const [mode = 'tradeoff', ...rest] = process.argv.slice(2);
const args = new Map<string, string>();
for (let i = 0; i < rest.length; i += 2) args.set(rest[i].replace(/^--/, ''), rest[i + 1]);
const root = fileURLToPath(new URL('../..', import.meta.url));
const PATH = '/v2/models/mnist/infer';
const FEATURES = 784;
const HELD_OUT = 2000;

/** A seeded permutation prefix: `count` distinct indices below `n`. */
function pick(n: number, count: number, seed: number): Int32Array {
  const index = Int32Array.from({ length: n }, (_, i) => i);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    const j = i + (s % (n - i));
    [index[i], index[j]] = [index[j], index[i]];
  }
  return index.slice(0, count);
}

/** A KServe V2 request of the given [0, 1] rows as UINT8 pixels, as the demo's clients send them. */
function requestBody(x: Float32Array, rows: Int32Array | number[]): string {
  const data = new Array<number>(rows.length * FEATURES);
  rows.forEach((row, r) => {
    for (let f = 0; f < FEATURES; f++) data[r * FEATURES + f] = Math.round(x[row * FEATURES + f] * 255);
  });
  return JSON.stringify({ inputs: [{ name: 'image', shape: [rows.length, FEATURES], datatype: 'UINT8', data }] });
}

/** CPU seconds a child process used so far (user + system, from /proc). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function listen(app: express.Express): Promise<{ server: Server; url: string }> {
  return new Promise((resolve, reject) => {
    const server = app.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
    server.once('error', reject);
  });
}

function startProxy(upstream: string, extra: string[]): Promise<{ process: ChildProcess; url: string; stderr: () => string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'src/cli/main.ts',
        'proxy',
        '-u',
        upstream,
        '--port',
        '0',
        '--log-level',
        'warn',
        '--metrics-public',
        '--output-name',
        'probabilities',
        '--input-name',
        'image',
        ...extra,
      ],
      { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    proc.stderr!.on('data', (c: Buffer) => {
      stderr += c;
      const match = /proxy: (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
      if (match) resolve({ process: proc, url: match[1], stderr: () => stderr });
    });
    proc.once('exit', (code) => reject(new Error(`proxy exited with ${code}: ${stderr}`)));
  });
}

async function stop(proc: ChildProcess): Promise<void> {
  proc.removeAllListeners('exit');
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill('SIGTERM');
  await exited;
}

async function post(url: string, body: string): Promise<void> {
  const res = await fetch(url + PATH, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  if (res.status !== 200) throw new Error(`${res.status}: ${await res.text()}`);
  await res.arrayBuffer();
}

async function metricsOf(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`)).text();
}

const gauge = (text: string, name: string, labels = ''): number | undefined => {
  const escaped = labels.replace(/[{}]/g, (c) => `\\${c}`);
  const match = new RegExp(`^${name}${escaped ? escaped : ''} ([\\d.e+-]+)$`, 'm').exec(text);
  return match ? Number(match[1]) : undefined;
};

const pct = (v: number | undefined) => (v === undefined ? '–' : `${(v * 100).toFixed(1)}%`);

const scratch = mkdtempSync(join(tmpdir(), 'msd-bench-shadow-'));
try {
  await initBackend({ log: () => {} });
  const mnist = await loadDataset('mnist', { log: (line) => console.error(line) });
  const victim = await loadOrTrainDemoVictim({
    dir: join(defaultCacheRoot(), 'models', 'demo-mnist-mlp'),
    train: mnist.train,
    test: mnist.test,
    features: FEATURES,
    classes: 10,
    epochs: 3,
    batchSize: 128,
  });
  console.log(
    `victim: the demo's MNIST MLP, test accuracy ${(victim.testAccuracy * 100).toFixed(2)}%${victim.fromCache ? ' (cached)' : ''}; ${cpus().length} cores, node ${process.version}`,
  );
  // The upstream: the demo app answering the victim's own probabilities (defense none).
  const upstream = buildDemoApp({ model: victim.model, defense: 'none', processMetrics: false });
  const upstreamServer = await listen(upstream.app);

  const heldX = mnist.test.x.subarray(0, HELD_OUT * FEATURES);
  const heldLabels = Int32Array.from(mnist.test.labels.slice(0, HELD_OUT));
  const heldAnswers = predictProbs(victim.model, heldX, HELD_OUT);
  writeFileSync(join(scratch, 'x.npy'), encodeNpy(Float32Array.from(heldX), [HELD_OUT, FEATURES]));
  writeFileSync(join(scratch, 'y.npy'), encodeNpy(heldLabels, [HELD_OUT]));
  writeFileSync(join(scratch, 'answers.npy'), encodeNpy(heldAnswers, [HELD_OUT, 10]));
  const surrogateDir = join(scratch, 'surrogate');
  const surrogate = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: 10, seed: 3 });
  await saveModel(surrogate, surrogateDir);
  surrogate.dispose();

  if (mode === 'tradeoff') {
    const defense = args.get('defense') ?? 'mad-argmax:eps=1';
    const thief = Number(args.get('thief') ?? 10_000);
    const benign = Number(args.get('benign') ?? 1000);
    const arch = args.get('arch') ?? 'cnn';
    const epochs = Number(args.get('epochs') ?? 5);
    const cpu = Number(args.get('cpu') ?? 0.5);
    const total = thief + benign;
    const shadowJson = { capacity: Math.ceil(total * 1.1), arch, epochs, batchSize: 128, minSamples: 100, seed: 1 };
    const fashion = await loadDataset('fashion-mnist', { log: (line) => console.error(line) });
    const thiefRows = pick(fashion.train.rows, thief, 1);
    const benignRows = Int32Array.from({ length: benign }, (_, i) => HELD_OUT + 3000 + i);
    // Thief requests of 256 rows (as `msd eval` sends), benign ones of 4, interleaved in proportion.
    const requests: string[] = [];
    const thiefBatches = Math.ceil(thief / 256);
    const benignBatches = Math.ceil(benign / 4);
    for (let t = 0, b = 0; t < thiefBatches || b < benignBatches; ) {
      if (t < thiefBatches && (b >= benignBatches || t / thiefBatches <= b / benignBatches)) {
        requests.push(requestBody(fashion.train.x, thiefRows.subarray(t * 256, Math.min(thief, (t + 1) * 256))));
        t += 1;
      } else {
        requests.push(requestBody(mnist.test.x, benignRows.subarray(b * 4, Math.min(benign, (b + 1) * 4))));
        b += 1;
      }
    }
    let url: string;
    let cleanup: () => Promise<void>;
    let cpuOf: () => number;
    let where: string;
    let summary: () => string | undefined;
    if (parseDefense(defense).needs.includes('misinformation')) {
      // The misinformation model as `msd eval` trains it: an MLP, 1 epoch of −log(1 − p_true) on 10 000 training images.
      const misinformation: LayersModel = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: 10, seed: 11 });
      await trainModel(
        misinformation,
        { x: mnist.train.x.subarray(0, 10_000 * FEATURES), rows: 10_000, labels: mnist.train.labels.slice(0, 10_000) },
        { epochs: 1, batchSize: 128, learningRate: 0.001, loss: 'misinformation', seed: 1, log: () => {} },
      );
      const guard = poisonPredictions({
        defense,
        protocol: kserveV2Codec({ inputName: 'image', outputName: 'probabilities' }),
        context: surrogateContext({ misinformation }),
        inputs: { numericScale: 1 / 255 },
        logger: createLogger({ level: 'warn' }),
        shadow: {
          heldOut: { x: Float32Array.from(heldX), labels: heldLabels, answers: heldAnswers, source: `MNIST test rows 0..${HELD_OUT - 1}` },
          sample: 1,
          every: `${total} samples`,
          cpu,
          ...shadowJson,
        },
      });
      const app = express();
      app.use(express.json({ limit: '20mb' }));
      app.post(PATH, guard, async (req, res, next) => {
        try {
          const inputs = await guard.inputsOf(req);
          const probs = predictProbs(victim.model, inputs.data, inputs.rows);
          res.json({ model_name: 'mnist', outputs: [{ name: 'probabilities', shape: [inputs.rows, 10], datatype: 'FP32', data: Array.from(probs) }] });
        } catch (error) {
          next(error);
        }
      });
      app.get('/metrics', guard.metricsHandler);
      app.use(guard.errorHandler);
      const served = await listen(app);
      url = served.url;
      where = 'the middleware (poisonPredictions), in this process';
      const before = process.cpuUsage();
      cpuOf = () => {
        const used = process.cpuUsage(before);
        return (used.user + used.system) / 1e6;
      };
      cleanup = async () => {
        await guard.shadow?.close();
        served.server.closeAllConnections();
        served.server.close();
      };
      summary = () => guard.shadow?.summary;
    } else {
      const proxy = await startProxy(upstreamServer.url, [
        '-d',
        defense,
        ...(parseDefense(defense).needs.length ? ['--surrogate', surrogateDir] : []),
        '--input-scale',
        String(1 / 255),
        '--shadow-held-out',
        join(scratch, 'x.npy'),
        '--shadow-held-out-answers',
        join(scratch, 'answers.npy'),
        '--shadow-sample',
        '1',
        '--shadow-every',
        `${total} samples`,
        '--shadow-cpu',
        String(cpu),
        '--shadow',
        JSON.stringify(shadowJson),
      ]);
      url = proxy.url;
      where = '`msd proxy`, a child process';
      const start = cpuSeconds(proxy.process.pid!);
      cpuOf = () => cpuSeconds(proxy.process.pid!) - start;
      cleanup = () => stop(proxy.process);
      summary = () => /shadow attacker: .*/.exec(proxy.stderr())?.[0];
    }
    try {
      const sent = performance.now();
      for (const body of requests) await post(url, body);
      const trafficSeconds = (performance.now() - sent) / 1000;
      const cpuTraffic = cpuOf();
      let text = '';
      for (;;) {
        text = await metricsOf(url);
        if ((gauge(text, 'msd_shadow_rounds_total', '{result="done"}') ?? 0) >= 1) break;
        if ((gauge(text, 'msd_shadow_rounds_total', '{result="failed"}') ?? 0) >= 1) throw new Error('the shadow round failed');
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
      const roundSeconds = (performance.now() - sent) / 1000 - trafficSeconds;
      const cpuTotal = cpuOf();
      const tier = '{tier="default"}';
      console.log(summary());
      console.log(
        `\n${defense} through ${where}: ${thief} thief rows (FashionMNIST, ${thiefBatches} requests of ≤ 256) + ${benign} benign rows (MNIST test, ${benignBatches} requests of ≤ 4), every request sampled`,
      );
      console.log(
        `shadow knockoff (${arch}, ${epochs} epochs) on ${gauge(text, 'msd_shadow_training_rows', tier)} rows, scored on ${HELD_OUT} MNIST test rows:`,
      );
      console.log(
        `  accuracy: defended ${pct(gauge(text, 'msd_shadow_attacker_accuracy_ratio', '{answers="defended",tier="default"}'))}, original ${pct(gauge(text, 'msd_shadow_attacker_accuracy_ratio', '{answers="original",tier="default"}'))}, protection ${pct(gauge(text, 'msd_shadow_protection_ratio', tier))}`,
      );
      console.log(
        `  agreement with the victim (held-back sampled rows): defended ${pct(gauge(text, 'msd_shadow_attacker_agreement_ratio', '{answers="defended",tier="default",on="held_back"}'))}, original ${pct(gauge(text, 'msd_shadow_attacker_agreement_ratio', '{answers="original",tier="default",on="held_back"}'))}`,
      );
      console.log(
        `  agreement with the victim (held-out set): defended ${pct(gauge(text, 'msd_shadow_attacker_agreement_ratio', '{answers="defended",tier="default",on="held_out"}'))}, original ${pct(gauge(text, 'msd_shadow_attacker_agreement_ratio', '{answers="original",tier="default",on="held_out"}'))}`,
      );
      console.log(
        `  utility on the held-out set: model ${pct(gauge(text, 'msd_shadow_model_accuracy_ratio'))}, defended answers ${pct(gauge(text, 'msd_shadow_defended_accuracy_ratio', tier))}`,
      );
      console.log(
        `cost: traffic ${trafficSeconds.toFixed(1)} s, then the round ${roundSeconds.toFixed(1)} s wall; shadow trainer thread CPU ${gauge(text, 'msd_shadow_train_seconds_total')?.toFixed(1)} s; serving process CPU ${cpuTraffic.toFixed(1)} s during the traffic, ${(cpuTotal - cpuTraffic).toFixed(1)} s during the round`,
      );
    } finally {
      await cleanup();
    }
  } else if (mode === 'throughput') {
    const seconds = Number(args.get('seconds') ?? 10);
    const connections = Number(args.get('connections') ?? 8);
    const body = requestBody(mnist.test.x, [HELD_OUT + 10]);
    const base = ['-d', 'mad-argmax:eps=1', '--surrogate', surrogateDir, '--input-scale', String(1 / 255)];
    // The worst case by default: a round every 300 sampled rows, so that rounds follow each other under load.
    const every = args.get('every') ?? '300 samples';
    const shadowCpu = args.get('cpu');
    const on = [
      '--shadow-held-out',
      join(scratch, 'x.npy'),
      '--shadow-every',
      every,
      ...(shadowCpu ? ['--shadow-cpu', shadowCpu] : []),
      '--shadow',
      JSON.stringify({ minSamples: 100 }),
    ];
    const roundsDuringLoad = /samples?$/.test(every.trim());
    console.log(
      `throughput: msd proxy (mad-argmax:eps=1, random MLP surrogate) in front of the demo victim, one image per request, ${connections} connections, ${seconds} s per run after a warm-up${roundsDuringLoad ? ' (with the shadow on: until its first round has finished)' : ''}; shadow on = the defaults (--shadow-sample 0.1, --shadow-arch auto: MLPs of 10 epochs on up to 4000 rows) with --shadow-cpu ${shadowCpu ?? '0.25 (default)'}, --shadow-every "${every}" and minSamples 100`,
    );
    const results: Record<string, number[]> = { off: [], on: [] };
    const repeats = Number(args.get('repeats') ?? 2);
    const order = Array.from({ length: repeats }, (_, i) => (i % 2 ? (['on', 'off'] as const) : (['off', 'on'] as const))).flat();
    const load = (url: string, duration: number) =>
      autocannon({ url: url + PATH, method: 'POST', headers: { 'content-type': 'application/json' }, body, connections, duration });
    const done = (text: string) => gauge(text, 'msd_shadow_rounds_total', '{result="done"}') ?? 0;
    const trainCpu = (text: string) => gauge(text, 'msd_shadow_train_seconds_total') ?? 0;
    for (const which of order) {
      const proxy = await startProxy(upstreamServer.url, which === 'on' ? [...base, ...on] : base);
      try {
        await load(proxy.url, 5);
        // With the shadow on, the load goes on until a round has finished: its trainer thread has started
        // (a one-off start-up that loads TF.js and onnxruntime in the thread) and rounds follow each other.
        for (let waited = 0; which === 'on' && roundsDuringLoad && done(await metricsOf(proxy.url)) < 1 && waited < 120; waited += 5) await load(proxy.url, 5);
        const before = await metricsOf(proxy.url);
        const cpuBefore = cpuSeconds(proxy.process.pid!);
        const result = await load(proxy.url, seconds);
        const cpu = cpuSeconds(proxy.process.pid!) - cpuBefore;
        const after = await metricsOf(proxy.url);
        results[which].push(result.requests.average);
        const lag = gauge(after, 'msd_nodejs_eventloop_lag_p99_seconds');
        console.log(
          `  shadow ${which}: ${result.requests.average.toFixed(0)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, failed ${result.errors + result.timeouts + result.non2xx}; event-loop lag p99 ${lag === undefined ? '–' : `${(lag * 1000).toFixed(1)} ms`}; proxy process CPU ${(cpu / seconds).toFixed(2)} cores` +
            (which === 'on'
              ? `, of which the trainer thread ${((trainCpu(after) - trainCpu(before)) / seconds).toFixed(2)} (rounds finished during the run: ${done(after) - done(before)})`
              : ''),
        );
      } finally {
        await stop(proxy.process);
      }
    }
    const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    console.log(
      `shadow on / off: ${(mean(results.on) / mean(results.off)).toFixed(3)}× throughput (means of ${repeats} runs each; off ${results.off.map((v) => v.toFixed(0)).join(', ')}, on ${results.on.map((v) => v.toFixed(0)).join(', ')} req/s)`,
    );
  } else {
    throw new Error(`mode "${mode}": use tradeoff or throughput`);
  }
  upstreamServer.server.closeAllConnections();
  upstreamServer.server.close();
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
