/**
 * `msd eval --queue URL`: the coordinator. It trains or loads the victim (for its fingerprint),
 * announces the grid on Redis, enqueues each pending run as one job whose id is the run key (BullMQ
 * ignores a job id it already holds: a second coordinator on the same grid, or a restarted one, adds
 * nothing twice), and collects the records that workers return into the one runs.jsonl. Records
 * returned while no coordinator was running stay in Redis as completed jobs and are picked up at the
 * next start. A run that failed on every try is reported with its log; a restart tries it again.
 */
import type http from 'node:http';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import type { Queue } from 'bullmq';
import type { EvalConfig } from '../config.js';
import type { ProgressFactory } from '../progress.js';
import type { RunRecord } from '../records/run-record.js';
import type { RunSpec } from '../run/run-key.js';
import type { EvaluationWorld } from '../world/world.js';
import { bullConnection, openRedis, sleep } from './connect.js';
import { QueueStatus, serveMetrics } from './coordinator-status.js';
import { fingerprintDifferences, gridFingerprint, type Fingerprint } from './fingerprint.js';
import { decodeMeta, DEFAULT_PREFIX, encodeMeta, gridDefinition, gridId, gridKeys, untransportable, type GridKeys, type RunJobData } from './grid.js';
import { GridRuns, type FailedRun } from './grid-runs.js';

export type { FailedRun } from './grid-runs.js';

export interface QueueOptions {
  /** redis://[user][:password]@host[:port][/db] or rediss://… */
  url: string;
  /** Key prefix on Redis (default msd:eval). */
  prefix?: string;
  /** Times a run is tried again after it failed or its worker died (default 2: at most 3 tries). */
  retries?: number;
  /** A worker that has not renewed its run's lock for this long is taken for dead (default 30 000 ms). */
  visibilityTimeoutMs?: number;
  /** Serve /metrics (runs by state, ETA, workers) on this port while the grid runs. */
  metricsPort?: number;
  /** Address of the metrics server (default 127.0.0.1). */
  metricsHost?: string;
  /** How often Redis is read for finished runs (default 1000 ms). */
  pollMs?: number;
  /** The status lines are printed on a change, at most this often, and at least every 10× this (default 5000 ms). */
  statusMs?: number;
  /** Stops collecting (the runs go on on the workers; a restart picks their records up). */
  signal?: AbortSignal;
  /** Told the metrics server's address once it listens (tests, logs). */
  onMetricsListening?: (url: string) => void;
}

export interface QueueRunOptions {
  config: EvalConfig;
  world: EvaluationWorld;
  pending: readonly RunSpec[];
  cacheDir: string;
  progress: ProgressFactory;
  log: (line: string) => void;
  onRecord: (record: RunRecord) => Promise<void>;
  queue: QueueOptions;
}

export const DEFAULT_RETRIES = 2;
export const DEFAULT_VISIBILITY_MS = 30_000;

/** Writes the grid's definition and fingerprint once; a later coordinator checks its own against them. */
async function announce(
  redis: Redis,
  keys: GridKeys,
  id: string,
  config: EvalConfig,
  fingerprint: Fingerprint,
  queue: QueueOptions,
  log: (line: string) => void,
): Promise<{ retries: number; visibilityMs: number }> {
  const retries = queue.retries ?? DEFAULT_RETRIES;
  const visibilityMs = queue.visibilityTimeoutMs ?? DEFAULT_VISIBILITY_MS;
  const fields = encodeMeta({ id, definition: gridDefinition(config), fingerprint, retries, visibilityMs, announcedAt: new Date().toISOString() });
  // The fingerprint field is the claim: the first coordinator writes everything, the others compare.
  if (await redis.hsetnx(keys.meta, 'fingerprint', fields.fingerprint)) {
    await redis.hset(keys.meta, fields);
  } else {
    let meta = decodeMeta(await redis.hgetall(keys.meta));
    for (let i = 0; i < 50 && !meta; i++) {
      await sleep(100);
      meta = decodeMeta(await redis.hgetall(keys.meta));
    }
    if (!meta)
      throw new Error(`grid ${id}: its announcement on the queue is incomplete; delete the grid's keys (${keys.prefix}:${keys.queueName}:*) and start again`);
    const differences = fingerprintDifferences(fingerprint, meta.fingerprint).map((d) => d.replace("coordinator's", 'the announced'));
    if (differences.length) {
      throw new Error(
        `grid ${id} is on the queue already, announced ${meta.announcedAt} with other models or data (${differences.join('; ')}): its finished runs were measured on them. ` +
          `Use that coordinator's cache folder (--cache-dir), or delete the grid from Redis: redis-cli --scan --pattern '${keys.prefix}:${keys.queueName}:*' | xargs redis-cli del`,
      );
    }
    if (meta.retries !== retries || meta.visibilityMs !== visibilityMs)
      log(`queue: grid ${id} keeps the settings it was announced with: ${meta.retries} retries, visibility timeout ${meta.visibilityMs / 1000} s`);
    await redis.hset(keys.meta, 'announcedAt', meta.announcedAt);
    return { retries: meta.retries, visibilityMs: meta.visibilityMs };
  }
  return { retries, visibilityMs };
}

/** A grid with ready defense objects or MAD surrogate kinds cannot be rebuilt on another machine. */
function checkTransportable(config: EvalConfig): void {
  const custom = untransportable(config);
  if (custom.length)
    throw new Error(
      `--queue: the grid holds defenses that cannot travel to other machines (${custom.map((d) => d.spec).join(', ')}: ready defense objects or MAD surrogate kinds); run them locally`,
    );
}

/** Serves /metrics when a port is given, and tells where. */
async function startMetricsServer(registry: Registry, queueOptions: QueueOptions, log: (line: string) => void): Promise<http.Server | undefined> {
  if (queueOptions.metricsPort === undefined) return undefined;
  const host = queueOptions.metricsHost ?? '127.0.0.1';
  const server = await serveMetrics(registry, queueOptions.metricsPort, host);
  const address = server.address();
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${typeof address === 'object' && address ? address.port : queueOptions.metricsPort}/metrics`;
  log(`queue: metrics on ${url}`);
  queueOptions.onMetricsListening?.(url);
  return server;
}

/** Stores what finished while no coordinator ran, queues again what failed before, and queues every run not stored. */
async function queueRuns(runs: GridRuns, retries: number, redacted: string, log: (line: string) => void): Promise<void> {
  await runs.collect();
  const stored = runs.stored.size;
  if (stored) log(`queue: ${stored} run${stored === 1 ? '' : 's'} finished on the queue before this start, now stored`);
  const retried = await runs.retryFailedBefore();
  if (retried) log(`queue: ${retried} run${retried === 1 ? '' : 's'} that failed before, queued again`);
  const added = await runs.enqueue(retries);
  // The password is never printed: with one, the command to copy takes the address from the environment.
  const start = redacted.includes(':***@') ? `MSD_QUEUE_URL='<this address, password included>' msd eval-worker` : `msd eval-worker --queue ${redacted}`;
  log(`queue: ${added} run${added === 1 ? '' : 's'} queued (a run already queued or running is not added twice); start workers with: ${start}`);
}

/** Collects records and failures until every run is settled or the signal stops it; then, with nothing left for workers, takes the grid off the list. */
async function collectUntilSettled(
  runs: GridRuns,
  status: QueueStatus,
  q: Queue<RunJobData, RunRecord>,
  redis: Redis,
  grid: { id: string; keys: GridKeys },
  queueOptions: QueueOptions,
  log: (line: string) => void,
): Promise<void> {
  const pollMs = queueOptions.pollMs ?? 1000;
  while (!runs.settled && !queueOptions.signal?.aborted) {
    await runs.collect();
    await runs.collectFailed();
    await status.report(await runs.counts());
    if (!runs.settled) await sleep(pollMs, queueOptions.signal);
  }
  const counts = await runs.counts();
  await status.report(counts);
  if (queueOptions.signal?.aborted)
    log(`queue: stopped collecting with ${counts.done}/${counts.total} runs stored; the workers go on, and the next start picks their records up`);
  else {
    const left = await q.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
    // Nothing left for workers on this grid: they stop looking at it (its jobs and records stay for a restart).
    if (Object.values(left).every((n) => n === 0)) await redis.zrem(grid.keys.grids, grid.id);
  }
}

/** Runs `pending` on the queue's workers; resolves with the runs that failed on every try (the rest went to onRecord). */
export async function runOnQueue(options: QueueRunOptions): Promise<FailedRun[]> {
  const { config, world, log, queue: queueOptions } = options;
  checkTransportable(config);
  const id = gridId(config);
  const keys = gridKeys(id, queueOptions.prefix ?? DEFAULT_PREFIX);
  const { redis, connection } = await openRedis(queueOptions.url, `msd-eval-coordinator-${id}`);
  let queue: Queue | undefined;
  let server: http.Server | undefined;
  try {
    log(`queue: grid ${id} on ${connection.redacted}`);
    const fingerprint = await gridFingerprint(config, world, options.cacheDir, options.progress, log);
    log(
      `queue: fingerprint data ${fingerprint.data.slice(0, 12)}…, victim ${fingerprint.victim.slice(0, 12)}…${fingerprint.misinformation ? `, misinformation ${fingerprint.misinformation.slice(0, 12)}…` : ''}`,
    );
    const { retries } = await announce(redis, keys, id, config, fingerprint, queueOptions, log);
    await redis.zadd(keys.grids, 'NX', Date.now(), id);

    const { Queue: BullQueue, Job: BullJob } = await import('bullmq');
    const q = new BullQueue<RunJobData, RunRecord>(keys.queueName, { connection: bullConnection(connection), prefix: keys.prefix });
    queue = q;
    q.on('error', (error) => log(`queue: ${error.message}`));
    const runs = new GridRuns(q, BullJob, { id, config }, options.pending, options.onRecord, log);
    // Records returned while no coordinator ran; runs that failed before are tried again.
    await queueRuns(runs, retries, connection.redacted, log);

    const status = new QueueStatus(redis, keys, queueOptions.statusMs ?? 5000, log);
    server = await startMetricsServer(status.registry, queueOptions, log);
    await collectUntilSettled(runs, status, q, redis, { id, keys }, queueOptions, log);
    return [...runs.failed.values()];
  } finally {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await queue?.close();
    redis.disconnect();
  }
}
