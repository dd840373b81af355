/**
 * One grid served by an eval worker (queue-worker.ts): its world prepared on this machine and its
 * fingerprint compared with the coordinator's (a mismatch refuses the grid), then its runs taken as
 * BullMQ jobs and run in the child processes until none is waiting or in progress anywhere. The
 * worker's heartbeat on Redis tells the coordinator its state and the runs it holds.
 */
import { hostname } from 'node:os';
import type { Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { EvalConfig } from '../config.js';
import type { ProgressFactory } from '../progress.js';
import type { RunRecord } from '../records/run-record.js';
import type { RunSpec } from '../run/run-key.js';
import { describeRun } from '../run/session.js';
import { buildWorld, type DatasetLoader } from '../world/world.js';
import { ChildPool } from './child-pool.js';
import { bullConnection, sleep } from './connect.js';
import { fingerprintDifferences, gridFingerprint } from './fingerprint.js';
import { configFromDefinition, gridKeys, runOfJob, type GridKeys, type GridMeta, type RunJobData } from './grid.js';
import type { QueueConnection } from './redis-url.js';
import { HEARTBEAT_MS, type RunningRun, type WorkerBeat, type WorkerState } from './status.js';

export interface GridServingOptions {
  prefix: string;
  /** The worker's name, on its heartbeat and each job's log. */
  name: string;
  jobs: number;
  cacheDir: string;
  pollMs?: number;
  loadDataset?: DatasetLoader;
  progress: ProgressFactory;
  log: (line: string) => void;
  signal?: AbortSignal;
}

/** What a worker counts over the grids it serves. */
export interface WorkerTally {
  finished: number;
  refused: { grid: string; reason: string }[];
  failed: { grid: string; reason: string }[];
}

export type GridOutcome = 'served' | 'refused' | 'failed';

async function defaultLoader(): Promise<DatasetLoader> {
  const { loadDataset } = await import('../world/datasets.js');
  return loadDataset as DatasetLoader;
}

/** Runs of a grid that a worker may still have to do: waiting, or in progress on a worker that may die. */
export async function outstanding(queue: Queue): Promise<number> {
  const counts = await queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/** This worker's state on one grid, written to the grid's workers hash now and every HEARTBEAT_MS. */
class WorkerHeartbeat {
  state: WorkerState = 'preparing';
  reason: string | undefined;
  readonly running = new Map<string, RunningRun>();
  finished = 0;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly keys: GridKeys,
    private readonly name: string,
    private readonly jobs: number,
  ) {}

  async beat(): Promise<void> {
    const value: WorkerBeat = {
      name: this.name,
      host: hostname(),
      pid: process.pid,
      jobs: this.jobs,
      state: this.state,
      reason: this.reason,
      running: [...this.running.values()],
      finished: this.finished,
      at: Date.now(),
    };
    await this.redis.hset(this.keys.workers, this.name, JSON.stringify(value)).catch(() => {});
  }

  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_MS);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The beat is left on Redis when the worker refused the grid or failed on it, for the coordinator to tell. */
  async remove(): Promise<void> {
    if (this.state !== 'refused' && this.state !== 'failed') await this.redis.hdel(this.keys.workers, this.name).catch(() => {});
  }
}

/** What the job processor needs. */
interface RunContext {
  config: EvalConfig;
  pool: ChildPool;
  heartbeat: WorkerHeartbeat;
  summary: WorkerTally;
  name: string;
  log: (line: string) => void;
  unrecoverable: (message: string) => Error;
}

/** One job: its run in a child process, the try on record in the job's log, the record returned to the queue. */
async function runJob(context: RunContext, job: Job<RunJobData, RunRecord>): Promise<RunRecord> {
  const { heartbeat, name, log } = context;
  let run: RunSpec;
  try {
    run = runOfJob(context.config, job.id, job.data);
  } catch (error) {
    // Not a run of this grid: no other worker would do better, so no retry.
    throw context.unrecoverable((error as Error).message);
  }
  const label = describeRun(run);
  const key = job.id!;
  heartbeat.running.set(key, { key, label, since: Date.now() });
  void heartbeat.beat();
  const tryNo = job.attemptsStarted;
  // The job's own log first: once the line below is printed, the try is on record in Redis even if this worker dies at once.
  await job.log(`${new Date().toISOString()} ${name}: started (try ${tryNo})`).catch(() => {});
  log(`running ${label} (${key}), try ${tryNo}`);
  try {
    const records = await context.pool.run([job.data.run], (line) => void job.log(`${name}: ${line}`).catch(() => {}));
    const record = records.find((r) => r.key === key);
    if (!record) throw new Error(`the child returned no record for ${key}`);
    heartbeat.finished += 1;
    context.summary.finished += 1;
    log(`done ${label} (${key}) in ${record.seconds.toFixed(1)} s`);
    return record;
  } catch (error) {
    const message = (error as Error).message;
    log(`failed ${label} (${key}): ${message}`);
    await job.log(`${new Date().toISOString()} ${name}: failed: ${message}`).catch(() => {});
    throw error;
  } finally {
    heartbeat.running.delete(key);
    void heartbeat.beat();
  }
}

/** A BullMQ worker taking the grid's jobs, `jobs` at once, with the grid's visibility timeout and retries. */
async function startJobWorker(
  meta: GridMeta,
  keys: GridKeys,
  connection: QueueConnection,
  options: GridServingOptions,
  context: Omit<RunContext, 'unrecoverable'>,
): Promise<Worker<RunJobData, RunRecord>> {
  const { Worker: BullWorker, UnrecoverableError } = await import('bullmq');
  const runContext: RunContext = { ...context, unrecoverable: (message) => new UnrecoverableError(message) };
  const worker = new BullWorker<RunJobData, RunRecord>(keys.queueName, (job) => runJob(runContext, job), {
    connection: bullConnection(connection),
    prefix: keys.prefix,
    name: options.name,
    concurrency: options.jobs,
    lockDuration: meta.visibilityMs,
    // Checked twice per visibility timeout: a dead worker's run is back in the queue within 1.5× of it.
    stalledInterval: Math.max(500, Math.floor(meta.visibilityMs / 2)),
    maxStalledCount: meta.retries,
    maxStartedAttempts: meta.retries + 1,
    drainDelay: 1,
  });
  worker.on('error', (error) => options.log(`grid ${meta.id}: queue error: ${error.message}`));
  return worker;
}

/** Serves until no run is waiting or in progress anywhere (a dead worker's run may come back), the pool fails, or the signal stops it. */
async function serveUntilDone(
  meta: GridMeta,
  options: GridServingOptions,
  queue: Queue,
  pool: ChildPool,
  worker: Worker<RunJobData, RunRecord>,
  heartbeat: WorkerHeartbeat,
): Promise<GridOutcome> {
  const { log, signal } = options;
  while (!signal?.aborted) {
    if (pool.failure) break;
    if (heartbeat.running.size === 0 && (await outstanding(queue)) === 0) break;
    await sleep(options.pollMs ?? 2000, signal);
  }
  if (pool.failure) {
    heartbeat.state = 'failed';
    heartbeat.reason = pool.failure.message;
    log(`grid ${meta.id}: stopped serving it: ${heartbeat.reason}`);
    await heartbeat.beat();
  } else {
    heartbeat.state = 'stopping';
    await heartbeat.beat();
  }
  // Waits for the runs in progress (their records are returned), then takes no more.
  await worker.close();
  const { finished } = heartbeat;
  log(`grid ${meta.id}: ${finished} run${finished === 1 ? '' : 's'} returned by this worker`);
  return heartbeat.state === 'failed' ? 'failed' : 'served';
}

export async function serveGrid(
  meta: GridMeta,
  options: GridServingOptions,
  redis: Redis,
  connection: QueueConnection,
  queue: Queue,
  summary: WorkerTally,
): Promise<GridOutcome> {
  const { log, name, signal } = options;
  const keys = gridKeys(meta.id, options.prefix);
  const heartbeat = new WorkerHeartbeat(redis, keys, name, options.jobs);
  await heartbeat.start();
  let pool: ChildPool | undefined;
  let worker: Worker<RunJobData, RunRecord> | undefined;
  try {
    const config = configFromDefinition(meta.definition, meta.id);
    log(
      `grid ${meta.id}: ${config.defenses.length} defense settings × ${config.policies.join('/')} × ${config.budgets.join('/')} × ${config.seeds} seeds (${config.victim}, ${config.world} world); preparing`,
    );
    const world = await buildWorld(config, options.loadDataset ?? (await defaultLoader()));
    const fingerprint = await gridFingerprint(config, world, options.cacheDir, options.progress, log);
    const differences = fingerprintDifferences(fingerprint, meta.fingerprint);
    if (differences.length) {
      heartbeat.state = 'refused';
      heartbeat.reason = `fingerprint mismatch: ${differences.join('; ')}`;
      log(
        `grid ${meta.id}: REFUSED, ${heartbeat.reason}. This machine trained or loaded other models or data than the coordinator's; copy the coordinator's cache folder (--cache-dir) or check the package versions.`,
      );
      summary.refused.push({ grid: meta.id, reason: heartbeat.reason });
      await heartbeat.beat();
      return 'refused';
    }
    if (signal?.aborted) return 'served';
    log(`grid ${meta.id}: fingerprint matches the coordinator's; starting ${options.jobs} child process${options.jobs === 1 ? '' : 'es'}`);
    pool = new ChildPool({ config, world, cacheDir: options.cacheDir, jobs: options.jobs });
    await pool.start();
    heartbeat.state = 'ready';
    await heartbeat.beat();
    worker = await startJobWorker(meta, keys, connection, options, { config, pool, heartbeat, summary, name, log });
    return await serveUntilDone(meta, options, queue, pool, worker, heartbeat);
  } catch (error) {
    heartbeat.state = 'failed';
    heartbeat.reason = (error as Error).message;
    log(`grid ${meta.id}: cannot serve it: ${heartbeat.reason}`);
    summary.failed.push({ grid: meta.id, reason: heartbeat.reason });
    await heartbeat.beat();
    return 'failed';
  } finally {
    heartbeat.stop();
    await worker?.close(true).catch(() => {});
    await pool?.close();
    await heartbeat.remove();
  }
}
