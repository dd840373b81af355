/**
 * The proxy as deployed, `msd proxy --workers N`, against the model server direct: requests/s and
 * latency with autocannon on loopback, for 1 and 2 workers (node:cluster), with `rounding` and with
 * MAD-argmax (a random 784-256-128-10 MLP surrogate saved to a temporary folder, its forward pass
 * per request included). The upstream is the KServe V2 stub answering fixed probabilities (no model
 * work), so the figures are the proxy's own cost. The upstream, the proxy (a primary and its workers)
 * and the load generator are separate processes on the same machine: on a 2-core machine the load
 * generator and the upstream take cores too, so 2 workers cannot double the rate; the ratio shows
 * what a second worker buys there. "library proxy" is startDefenseProxy in one process (no CLI, no
 * logger), a reference for the CLI's own cost. Ratios are against the direct run of the same invocation.
 *
 *   npm run bench -- proxy-workers [--connections 32] [--seconds 5] [--workers 1,2]
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { createModel, initBackend, saveModel } from '../../src/models/index.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const connections = Number(args.get('connections') ?? 32);
const seconds = Number(args.get('seconds') ?? 5);
const workerCounts = (args.get('workers') ?? '1,2').split(',').map(Number);
const root = fileURLToPath(new URL('../..', import.meta.url));
const child = fileURLToPath(new URL('../children/_server-child.ts', import.meta.url));

const PATH = '/v2/models/mnist/infer';
const body = JSON.stringify({ inputs: [{ name: 'image', shape: [1, 784], datatype: 'UINT8', data: Array.from({ length: 784 }, (_, i) => (i * 37) % 256) }] });

/** A process of bench/children/_server-child.ts: the stub upstream, or the library proxy (startDefenseProxy, no CLI, no logger) as a reference. */
function startChild(role: 'stub' | 'proxy', upstream = '', defense = ''): Promise<{ process: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const proc = fork(child, [role, upstream, defense], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    proc.once('exit', (code) => reject(new Error(`${role} exited with ${code}`)));
    proc.on('message', (m: { type: string; url?: string }) => m.type === 'ready' && resolve({ process: proc, url: m.url! }));
  });
}

/** `msd proxy` as a user runs it; resolves with its URL once every worker listens. */
function startProxy(upstream: string, workers: number, extra: string[]): Promise<{ process: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'proxy', '-u', upstream, '--workers', String(workers), '--port', '0', '--log-level', 'warn', ...extra],
      { cwd: root, stdio: ['ignore', 'inherit', 'pipe'] },
    );
    let stderr = '';
    proc.stderr!.on('data', (c: Buffer) => {
      stderr += c;
      const match = /proxy: (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
      if (match) resolve({ process: proc, url: match[1] });
    });
    proc.once('exit', (code) => reject(new Error(`proxy exited with ${code}: ${stderr}`)));
  });
}

async function stop(started: { process: ChildProcess }): Promise<void> {
  started.process.removeAllListeners('exit');
  const exited = new Promise((resolve) => started.process.once('exit', resolve));
  started.process.kill('SIGTERM');
  await exited;
}

async function load(url: string, duration: number) {
  const result = await autocannon({ url: url + PATH, method: 'POST', headers: { 'content-type': 'application/json' }, body, connections, duration });
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, failed: result.errors + result.timeouts + result.non2xx };
}

const scratch = mkdtempSync(join(tmpdir(), 'msd-bench-workers-'));
try {
  await initBackend({ log: () => {} });
  const surrogateDir = join(scratch, 'surrogate');
  const surrogate = createModel({ arch: 'mlp', inputShape: [784], classes: 10, seed: 3 });
  await saveModel(surrogate, surrogateDir);
  surrogate.dispose();
  const defenses: [string, string[]][] = [
    ['rounding:decimals=3', ['-d', 'rounding:decimals=3']],
    ['mad-argmax:eps=0.8', ['-d', 'mad-argmax:eps=0.8', '--surrogate', surrogateDir, '--input-scale', String(1 / 255)]],
  ];
  console.log(
    `proxy-workers: ${connections} connections, ${seconds}s per run, ${cpus().length} cores, node ${process.version}; one 784-pixel UINT8 image per request, K = 10`,
  );
  const stub = await startChild('stub');
  try {
    await load(stub.url, 1);
    const direct = await load(stub.url, seconds);
    const line = (name: string, f: Awaited<ReturnType<typeof load>>) =>
      console.log(
        `${name.padEnd(46)} ${f.rps.toFixed(0).padStart(8)} ${f.p50.toFixed(0).padStart(6)} ${f.p99.toFixed(0).padStart(6)} ${(f.rps / direct.rps).toFixed(3).padStart(8)} ${String(f.failed).padStart(7)}`,
      );
    console.log(`${'route'.padEnd(46)} ${'req/s'.padStart(8)} ${'p50'.padStart(6)} ${'p99'.padStart(6)} ${'×direct'.padStart(8)} ${'failed'.padStart(7)}`);
    line('direct (stub upstream)', direct);
    for (const [name, extra] of defenses) {
      const reference = await startChild('proxy', stub.url, name);
      try {
        await load(reference.url, 1);
        line(`library proxy ${name} (reference)`, await load(reference.url, seconds));
      } finally {
        await stop(reference);
      }
      for (const workers of workerCounts) {
        const proxy = await startProxy(stub.url, workers, extra);
        try {
          await load(proxy.url, 2);
          line(`proxy ${name}, ${workers} worker${workers > 1 ? 's' : ''}`, await load(proxy.url, seconds));
        } finally {
          await stop(proxy);
        }
      }
    }
  } finally {
    await stop(stub);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
