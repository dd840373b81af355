/**
 * One grid served by an eval worker (queue-worker.ts): its world prepared on this machine and its
 * fingerprint compared with the coordinator's (a mismatch refuses the grid), then, once a run is
 * there to take, its runs taken as BullMQ jobs and run in the child processes until none is waiting
 * or in progress anywhere. Children that keep failing to start stop the taking at once; the runs
 * that were waiting for them go back to the queue. The worker's heartbeat on Redis tells the
 * coordinator its state and the runs it holds.
 */
import { hostname } from 'node:os';
import type { Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { EvalConfig } from '../../config.js';
import type { ProgressFactory } from '../../progress.js';
import type { RunRecord } from '../../records/run-record.js';
import type { RunSpec } from '../../run/run-key.js';
import { describeRun } from '../../run/session.js';
import { buildWorld, type DatasetLoader } from '../../world/world.js';
import { ChildPool, ChildPoolFailure } from './child-pool.js';
import { sleep } from '../connect.js';
import { fingerprintDifferences, gridFingerprint } from '../fingerprint.js';
import { giveBackRun } from './give-back.js';
import { configFromDefinition, gridKeys, runOfJob, type GridKeys, type GridMeta, type RunJobData } from '../grid.js';
import type { QueueConnection } from '../redis-url.js';
import { gridWorkerOptions, watchStalled } from './stall-watch.js';
import { HEARTBEAT_MS, type RunningRun, type WorkerBeat, type WorkerState } from '../status.js';

/** How a worker runs the runs it takes, whatever the grid. */
export interface WorkerRunOptions {
  /** Runs at once on this machine, one child process each. */
  jobs: number;
  /** Where trained victims are kept (as `msd eval --cache-dir`). */
  cacheDir: string;
  /** A run still going after this long has its child killed, and fails (default: no limit). */
  runTimeoutMs?: number;
  /** How often the announced grids are looked at when there is nothing to do (default 2000 ms). */
  pollMs?: number;
  loadDataset?: DatasetLoader;
  progress: ProgressFactory;
  log: (line: string) => void;
  /** Stops taking runs; the runs in progress finish and are returned first. */
  signal?: AbortSignal;
}

export interface GridServingOptions extends WorkerRunOptions {
  prefix: string;
  /** The worker's name, on its heartbeat and each job's log. */
  name: string;
}

/** What a worker counts over the grids it serves. */
export interface WorkerTally {
  /** Runs this worker returned records for. */
  finished: number;
  /** Grids it refused (fingerprint mismatch), with why. */
  refused: { grid: string; reason: string }[];
  /** Grids it could not serve (the data, the victim or its children failed), with why. */
  failed: { grid: string; reason: string }[];
}

export type GridOutcome = 'served' | 'refused' | 'failed';

async function defaultLoader(): Promise<DatasetLoader> {
  const { loadDataset } = await import('../../world/datasets.js');
  return loadDataset as DatasetLoader;
}

/** Runs of a grid that a worker may still have to do: waiting, or in progress on a worker that may die. */
export async function outstanding(queue: Queue): Promise<number> {
  const counts = await queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/** Runs of a grid that a worker could take now or soon: waiting (prioritised or not) or delayed, not running anywhere. */
export async function toTake(queue: Queue): Promise<number> {
  const counts = await queue.getJobCounts('waiting', 'prioritized', 'delayed');
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
  /** Puts back a run that never reached a child; returns the error the processor throws for it. */
  giveBack: (job: Job<RunJobData, RunRecord>, token: string) => Promise<Error>;
}

/** One job: its run in a child process, the try on record in the job's log, the record returned to the queue. */
async function runJob(context: RunContext, job: Job<RunJobData, RunRecord>, token: string | undefined): Promise<RunRecord> {
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
    if (error instanceof ChildPoolFailure && token) {
      // This machine's fault, not the run's: another worker runs it, with all its tries.
      log(`gave back ${label} (${key}) to the queue, not counted as a try: ${message}`);
      await job.log(`${new Date().toISOString()} ${name}: gave it back to the queue, not counted as a try: ${message}`).catch(() => {});
      throw await context.giveBack(job, token);
    }
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
  context: Omit<RunContext, 'unrecoverable' | 'giveBack'>,
  redis: Redis,
): Promise<Worker<RunJobData, RunRecord>> {
  const { Worker: BullWorker, UnrecoverableError, WaitingError } = await import('bullmq');
  const runContext: RunContext = {
    ...context,
    unrecoverable: (message) => new UnrecoverableError(message),
    giveBack: async (job, token) => {
      await giveBackRun(redis, worker, job, token);
      return new WaitingError();
    },
  };
  const worker: Worker<RunJobData, RunRecord> = new BullWorker<RunJobData, RunRecord>(keys.queueName, (job, token) => runJob(runContext, job, token), {
    ...gridWorkerOptions(meta, keys, connection, options.name),
    concurrency: options.jobs,
    drainDelay: 1,
  });
  worker.on('error', (error) => options.log(`grid ${meta.id}: queue error: ${error.message}`));
  return worker;
}

/**
 * Children are started only for a run to take. While the grid's last runs all run on other workers,
 * waits (a look at the queue every poll, and the grid's stalled check) for one to come back, its
 * worker dead (true), or for the grid to end (false).
 */
async function waitForRunToTake(
  meta: GridMeta,
  options: GridServingOptions,
  queue: Queue,
  heartbeat: WorkerHeartbeat,
  keys: GridKeys,
  connection: QueueConnection,
): Promise<boolean> {
  let watcher: Worker | undefined;
  try {
    while (!options.signal?.aborted) {
      if ((await toTake(queue)) > 0) return true;
      if ((await outstanding(queue)) === 0) return false;
      if (!watcher) {
        options.log(`grid ${meta.id}: no run to take, the runs left all run on other workers; waiting for one to come back, no child process started`);
        heartbeat.state = 'waiting';
        await heartbeat.beat();
        watcher = await watchStalled(meta, keys, connection, options.name, options.log);
      }
      await sleep(options.pollMs ?? 2000, options.signal);
    }
    return false;
  } finally {
    await watcher?.close().catch(() => {});
  }
}

/** Serves until no run is waiting or in progress anywhere (a dead worker's run may come back), the pool fails, or the signal stops it. */
async function serveUntilDone(
  meta: GridMeta,
  options: GridServingOptions,
  queue: Queue,
  pool: ChildPool,
  worker: Worker<RunJobData, RunRecord>,
  heartbeat: WorkerHeartbeat,
  summary: WorkerTally,
): Promise<GridOutcome> {
  const { log, signal } = options;
  // Woken by a broken pool at once, not at the next look (one reaction to it, not one per look).
  const wake = new AbortController();
  const stopWaking = () => wake.abort();
  signal?.addEventListener('abort', stopWaking, { once: true });
  void pool.broke.then(stopWaking);
  while (!signal?.aborted) {
    if (pool.failure) break;
    if (heartbeat.running.size === 0 && (await outstanding(queue)) === 0) break;
    await sleep(options.pollMs ?? 2000, wake.signal);
  }
  signal?.removeEventListener('abort', stopWaking);
  if (pool.failure) {
    heartbeat.state = 'failed';
    heartbeat.reason = pool.failure.message;
    log(`grid ${meta.id}: stopped serving it: ${heartbeat.reason}`);
    summary.failed.push({ grid: meta.id, reason: heartbeat.reason });
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
    log(`grid ${meta.id}: fingerprint matches the coordinator's`);
    // The runs may have been taken by other workers while this one prepared.
    if (!(await waitForRunToTake(meta, options, queue, heartbeat, keys, connection))) return 'served';
    log(`grid ${meta.id}: starting ${options.jobs} child process${options.jobs === 1 ? '' : 'es'}`);
    pool = new ChildPool({ config, world, cacheDir: options.cacheDir, jobs: options.jobs, runTimeoutMs: options.runTimeoutMs });
    await pool.start();
    heartbeat.state = 'ready';
    await heartbeat.beat();
    const started = await startJobWorker(meta, keys, connection, options, { config, pool, heartbeat, summary, name, log }, redis);
    worker = started;
    // A broken pool takes no more runs from the moment it breaks: each would fail at once and use up a try.
    void pool.broke.then(() => started.close().catch(() => {}));
    return await serveUntilDone(meta, options, queue, pool, worker, heartbeat, summary);
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
