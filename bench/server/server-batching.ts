/**
 * Does a large request stall the server? The demo model server (MNIST-sized 784-256-128-10 MLP
 * victim, MAD-argmax with a random MLP surrogate) run in a child process, synchronous (one forward
 * pass per request, as before batching) against batched (victim and surrogate passes through the
 * batcher: 2 ms window, 32 rows per pass, round robin between requests).
 *   1. stall: latency of a one-row request sent while a 4,000-row request (11 MB of JSON) is in
 *      flight, at several offsets after the large body was sent, and the large request's own latency;
 *   2. event-loop delay (monitorEventLoopDelay in the server, 1 ms resolution) and client latency under
 *      32 concurrent one-row clients, alone and with one more client sending 4,000-row requests;
 *   3. throughput (req/s, autocannon) at 1, 8 and 32 concurrent one-row clients, defenses none and
 *      mad-argmax, sync against batched with a 2 ms window (the default) and with none (0 ms).
 * The modes run side by side and take turns, so a drift in the machine's load weighs on both; compare
 * the ratios within one run.
 *
 *   npm run bench -- server-batching [--seconds 3] [--rows 4000] [--trials 3]
 */
import { fork, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const seconds = Number(args.get('seconds') ?? 3);
const largeRows = Number(args.get('rows') ?? 4000);
const trials = Number(args.get('trials') ?? 3);
const child = fileURLToPath(new URL('../children/_batching-child.ts', import.meta.url));
const PATH = '/v2/models/mnist/infer';
const MAD = 'mad-argmax:eps=0.8';

const bodyOf = (rows: number) =>
  JSON.stringify({ inputs: [{ name: 'image', shape: [rows, 784], datatype: 'UINT8', data: Array.from({ length: rows * 784 }, (_, i) => (i * 37) % 256) }] });
const small = bodyOf(1);
const large = bodyOf(largeRows);

type Mode = 'sync' | 'batched';
interface Started {
  process: ChildProcess;
  url: string;
}

function start(mode: Mode, defense: string, windowMs?: number): Promise<Started> {
  return new Promise((resolve, reject) => {
    const proc = fork(child, [mode, defense, ...(windowMs === undefined ? [] : [String(windowMs)])], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`${mode} server exited with ${code}`)));
    proc.on('message', (m: { type: string; url?: string }) => m.type === 'ready' && resolve({ process: proc, url: m.url! }));
  });
}

function stop(started: Started): void {
  started.process.removeAllListeners('exit');
  started.process.kill('SIGTERM');
}

function lagOf(started: Started): Promise<{ p50: number; p99: number; max: number }> {
  return new Promise((resolve) => {
    const onMessage = (m: { type: string; p50: number; p99: number; max: number }) => {
      if (m.type !== 'lag') return;
      started.process.off('message', onMessage);
      resolve(m);
    };
    started.process.on('message', onMessage);
    started.process.send({ type: 'lag' });
  });
}

/** POSTs `body`; resolves with the status and milliseconds from the first byte sent to the last received, once the body is written, `sent` fires. */
function post(url: string, body: string, sent?: () => void): Promise<{ status: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const began = performance.now();
    const req = http.request(
      url + PATH,
      { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - began }));
      },
    );
    req.once('error', reject);
    req.end(body, sent);
  });
}

const fmt = (v: number, digits = 0) => v.toFixed(digits).padStart(7);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

console.log(
  `server-batching: node ${process.version}; demo server in a child process; large request ${largeRows} rows (${(large.length / 2 ** 20).toFixed(1)} MiB of JSON), small request 1 row`,
);

// Both modes run side by side and take turns, so that a change in the shared machine's load weighs on both alike.
const servers: Record<Mode, Started> = { sync: await start('sync', MAD), batched: await start('batched', MAD) };
const MODES: Mode[] = ['sync', 'batched'];
try {
  // 1. Stall.
  console.log(`\n1. one-row request sent while a ${largeRows}-row request is in flight (${MAD}); ms, median over ${trials} trials`);
  console.log(`${'offset ms'.padStart(9)} │ ${'sync small'.padStart(10)} ${'large'.padStart(7)} │ ${'batched small'.padStart(13)} ${'large'.padStart(7)}`);
  const alone: Record<Mode, number[]> = { sync: [], batched: [] };
  for (const mode of MODES) {
    await post(servers[mode].url, large);
    for (let i = 0; i < 20; i++) await post(servers[mode].url, small);
  }
  for (let i = 0; i < 20; i++) for (const mode of MODES) alone[mode].push((await post(servers[mode].url, small)).ms);
  const stall: Record<Mode, number[]> = { sync: [], batched: [] };
  for (const offset of [0, 150, 300, 500]) {
    const smalls: Record<Mode, number[]> = { sync: [], batched: [] };
    const larges: Record<Mode, number[]> = { sync: [], batched: [] };
    for (let t = 0; t < trials; t++) {
      for (const mode of MODES) {
        const { url } = servers[mode];
        let sentAt = 0;
        const big = post(url, large, () => (sentAt = performance.now()));
        while (sentAt === 0) await sleep(1);
        await sleep(offset);
        const one = await post(url, small);
        const done = await big;
        if (one.status !== 200 || done.status !== 200) throw new Error(`status ${one.status}/${done.status}`);
        smalls[mode].push(one.ms);
        larges[mode].push(done.ms);
        stall[mode].push(one.ms);
      }
    }
    console.log(
      `${String(offset).padStart(9)} │ ${fmt(median(smalls.sync)).padStart(10)} ${fmt(median(larges.sync))} │ ${fmt(median(smalls.batched)).padStart(13)} ${fmt(median(larges.batched))}`,
    );
  }
  console.log(
    `one-row request alone (median of 20): sync ${median(alone.sync).toFixed(1)} ms, batched ${median(alone.batched).toFixed(1)} ms (a lone request does not wait for the window)`,
  );
  console.log(
    `during a large one, all offsets: median sync ${median(stall.sync).toFixed(0)} ms → batched ${median(stall.batched).toFixed(0)} ms (${(median(stall.sync) / median(stall.batched)).toFixed(1)}× shorter); worst ${Math.max(...stall.sync).toFixed(0)} → ${Math.max(...stall.batched).toFixed(0)} ms`,
  );

  // 2. Event-loop delay.
  console.log(`\n2. event-loop delay in the server (ms) and client latency (ms) under 32 one-row clients, ${seconds}s each (${MAD})`);
  console.log(
    `${'mode'.padEnd(8)} ${'load'.padEnd(30)} ${'loop p50'.padStart(8)} ${'loop p99'.padStart(8)} ${'loop max'.padStart(8)} │ ${'req/s'.padStart(7)} ${'p50'.padStart(7)} ${'p99'.padStart(7)} │ large done`,
  );
  for (const withLarge of [false, true]) {
    for (const mode of MODES) {
      const server = servers[mode];
      await autocannon({ url: server.url + PATH, method: 'POST', headers: { 'content-type': 'application/json' }, body: small, connections: 32, duration: 1 });
      server.process.send({ type: 'reset' });
      let running = true;
      let largeDone = 0;
      const background = (async () => {
        while (withLarge && running) {
          await post(server.url, large);
          largeDone++;
        }
      })();
      const result = await autocannon({
        url: server.url + PATH,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: small,
        connections: 32,
        duration: seconds,
      });
      running = false;
      const lag = await lagOf(server);
      await background;
      const load = withLarge ? `32 clients + ${largeRows}-row client` : '32 clients';
      console.log(
        `${mode.padEnd(8)} ${load.padEnd(30)} ${fmt(lag.p50, 1).padStart(8)} ${fmt(lag.p99, 1).padStart(8)} ${fmt(lag.max, 1).padStart(8)} │ ${fmt(result.requests.average)} ${fmt(result.latency.p50)} ${fmt(result.latency.p99)} │ ${withLarge ? largeDone : '-'}${result.non2xx ? ` (${result.non2xx} non-2xx)` : ''}`,
      );
    }
  }
} finally {
  for (const mode of MODES) stop(servers[mode]);
}

// 3. Throughput: every configuration started, then measured in turn at each concurrency.
console.log(`\n3. throughput, one-row requests, req/s (autocannon mean over ${seconds}s), p99 ms in brackets`);
const configs = [
  ['none', 'sync'],
  ['none', 'batched', 2],
  ['none', 'batched', 0],
  [MAD, 'sync'],
  [MAD, 'batched', 2],
  [MAD, 'batched', 0],
] as [string, Mode, number?][];
const started: Started[] = [];
try {
  for (const [defense, mode, windowMs] of configs) started.push(await start(mode, defense, windowMs));
  const cells: string[][] = configs.map(() => []);
  for (const server of started)
    await autocannon({ url: server.url + PATH, method: 'POST', headers: { 'content-type': 'application/json' }, body: small, connections: 8, duration: 1 });
  for (const connections of [1, 8, 32]) {
    for (const [i, server] of started.entries()) {
      const r = await autocannon({
        url: server.url + PATH,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: small,
        connections,
        duration: seconds,
      });
      cells[i].push(`${r.requests.average.toFixed(0)} (${r.latency.p99})`.padStart(16));
    }
  }
  console.log(`${'defense / mode'.padEnd(28)} ${[1, 8, 32].map((c) => `${c} client${c > 1 ? 's' : ''}`.padStart(16)).join('')}`);
  for (const [i, [defense, mode, windowMs]] of configs.entries())
    console.log(`${`${defense} ${mode}${windowMs === undefined ? '' : ` ${windowMs} ms`}`.padEnd(28)} ${cells[i].join('')}`);
} finally {
  started.forEach(stop);
}
