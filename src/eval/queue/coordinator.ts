/**
 * `msd eval --queue URL`: the coordinator. It trains or loads the victim (for its fingerprint),
 * announces the grid on Redis, enqueues each pending run as one job whose id is the run key (BullMQ
 * ignores a job id it already holds: a second coordinator on the same grid, or a restarted one, adds
 * nothing twice), and collects the records that workers return into the one runs.jsonl. Records
 * returned while no coordinator was running stay in Redis as completed jobs and are picked up at the
 * next start. A run that failed on every try is reported with its log; a restart tries it again.
 */
import http from 'node:http';
import type { Redis } from 'ioredis';
import { Gauge, Registry } from 'prom-client';
import type { Job, Queue } from 'bullmq';
import type { EvalConfig } from '../config.js';
import { describeRun } from '../run/session.js';
import type { ProgressFactory } from '../progress.js';
import { isRunRecord, type RunRecord } from '../records/run-record.js';
import type { RunSpec } from '../run/run-key.js';
import type { EvaluationWorld } from '../world/world.js';
import { bullConnection, openRedis, sleep } from './connect.js';
import { fingerprintDifferences, gridFingerprint, type Fingerprint } from './fingerprint.js';
import { decodeMeta, DEFAULT_PREFIX, encodeMeta, gridDefinition, gridId, gridKeys, jobData, untransportable, type GridKeys, type RunJobData } from './grid.js';
import { EtaEstimator, parseBeats, statusLines, type RunCounts, type WorkerBeat } from './status.js';

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

export interface FailedRun {
  key: string;
  label: string;
  reason: string;
  /** Times it was started. */
  attempts: number;
  /** Its log: which worker ran it, and what the worker and its child wrote. */
  log: string[];
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

/** The record a job returned, if it is one of this run. */
function recordOf(job: Job | undefined, key: string): RunRecord | undefined {
  const value: unknown = job?.returnvalue;
  return isRunRecord(value) && value.key === key ? value : undefined;
}

interface Metrics {
  registry: Registry;
  runs: Gauge<'state'>;
  eta: Gauge;
  workers: Gauge;
  workerRuns: Gauge<'worker'>;
}

function createMetrics(): Metrics {
  const registry = new Registry();
  return {
    registry,
    runs: new Gauge({
      name: 'msd_eval_queue_runs',
      help: 'Runs of the grid this coordinator waits for, by state (done, running, queued, failed).',
      labelNames: ['state'],
      registers: [registry],
    }),
    eta: new Gauge({ name: 'msd_eval_queue_eta_seconds', help: 'Estimated seconds until every run is done (-1: no estimate yet).', registers: [registry] }),
    workers: new Gauge({ name: 'msd_eval_queue_workers', help: 'Workers with a recent heartbeat on this grid.', registers: [registry] }),
    workerRuns: new Gauge({ name: 'msd_eval_queue_worker_runs', help: 'Runs each live worker is running now.', labelNames: ['worker'], registers: [registry] }),
  };
}

async function serveMetrics(registry: Registry, port: number, host: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        (error: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(error.message);
        },
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found; the metrics are on /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

/** Runs `pending` on the queue's workers; resolves with the runs that failed on every try (the rest went to onRecord). */
export async function runOnQueue(options: QueueRunOptions): Promise<FailedRun[]> {
  const { config, world, pending, log, queue: queueOptions } = options;
  const custom = untransportable(config);
  if (custom.length)
    throw new Error(
      `--queue: the grid holds defenses that cannot travel to other machines (${custom.map((d) => d.spec).join(', ')}: ready defense objects or MAD surrogate kinds); run them locally`,
    );
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
    const byKey = new Map(pending.map((run) => [jobData(id, config, run).key, run]));
    const stored = new Set<string>();
    const failed = new Map<string, FailedRun>();

    const collect = async (): Promise<void> => {
      for (const key of await q.getRanges(['completed'], 0, -1, true)) {
        if (!byKey.has(key) || stored.has(key)) continue;
        const job = await BullJob.fromId<RunJobData, RunRecord>(q, key);
        const record = recordOf(job, key);
        if (!record) {
          if (!failed.has(key))
            failed.set(key, {
              key,
              label: describeRun(byKey.get(key)!),
              reason: 'the job completed without a record of this run',
              attempts: job?.attemptsStarted ?? 0,
              log: [],
            });
          continue;
        }
        stored.add(key);
        await options.onRecord(record);
      }
    };
    const collectFailed = async (): Promise<void> => {
      for (const key of await q.getRanges(['failed'], 0, -1)) {
        if (!byKey.has(key) || stored.has(key) || failed.has(key)) continue;
        const job = await BullJob.fromId<RunJobData, RunRecord>(q, key);
        const { logs } = await q.getJobLogs(key, 0, -1, true);
        const run: FailedRun = {
          key,
          label: describeRun(byKey.get(key)!),
          reason: job?.failedReason ?? 'unknown',
          attempts: job?.attemptsStarted ?? 0,
          log: logs,
        };
        failed.set(key, run);
        log(`queue: FAILED ${run.label} (${key}) after ${run.attempts} tr${run.attempts === 1 ? 'y' : 'ies'}: ${run.reason}`);
        for (const line of run.log) log(`  | ${line}`);
      }
    };

    // Records returned while no coordinator ran; runs that failed before are tried again.
    await collect();
    if (stored.size) log(`queue: ${stored.size} run${stored.size === 1 ? '' : 's'} finished on the queue before this start, now stored`);
    let retried = 0;
    for (const key of await q.getRanges(['failed'], 0, -1)) {
      if (!byKey.has(key) || stored.has(key)) continue;
      const job = await BullJob.fromId(q, key);
      await job?.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
      retried += 1;
    }
    if (retried) log(`queue: ${retried} run${retried === 1 ? '' : 's'} that failed before, queued again`);
    const toAdd = [...byKey].filter(([key]) => !stored.has(key));
    for (let i = 0; i < toAdd.length; i += 500) {
      await q.addBulk(
        toAdd.slice(i, i + 500).map(([, run]) => ({
          name: 'run',
          data: jobData(id, config, run),
          opts: { jobId: jobData(id, config, run).key, attempts: retries + 1, removeOnComplete: false, removeOnFail: false },
        })),
      );
    }
    log(
      `queue: ${toAdd.length} run${toAdd.length === 1 ? '' : 's'} queued (a run already queued or running is not added twice); start workers with: msd eval-worker --queue ${connection.redacted}`,
    );

    const metrics = createMetrics();
    if (queueOptions.metricsPort !== undefined) {
      const host = queueOptions.metricsHost ?? '127.0.0.1';
      server = await serveMetrics(metrics.registry, queueOptions.metricsPort, host);
      const address = server.address();
      const url = `http://${host.includes(':') ? `[${host}]` : host}:${typeof address === 'object' && address ? address.port : queueOptions.metricsPort}/metrics`;
      log(`queue: metrics on ${url}`);
      queueOptions.onMetricsListening?.(url);
    }

    const eta = new EtaEstimator();
    const pollMs = queueOptions.pollMs ?? 1000;
    const statusMs = queueOptions.statusMs ?? 5000;
    let lastStatus = '';
    let lastPrinted = 0;
    const knownWorkers = new Set<string>();
    const toldRefusals = new Set<string>();
    const report = async (): Promise<RunCounts> => {
      const active = (await q.getRanges(['active'], 0, -1)).filter((k) => byKey.has(k) && !stored.has(k)).length;
      const counts: RunCounts = {
        total: byKey.size,
        done: stored.size,
        running: active,
        failed: failed.size,
        queued: Math.max(0, byKey.size - stored.size - failed.size - active),
      };
      const now = Date.now();
      const { live, stale } = parseBeats(await redis.hgetall(keys.workers), now);
      if (stale.length) await redis.hdel(keys.workers, ...stale);
      for (const w of live) {
        if ((w.state === 'refused' || w.state === 'failed') && !toldRefusals.has(`${w.name} ${w.reason}`)) {
          toldRefusals.add(`${w.name} ${w.reason}`);
          log(`queue: worker ${w.name} ${w.state === 'refused' ? 'refused the grid' : 'cannot serve the grid'}: ${w.reason ?? 'no reason given'}`);
        }
      }
      const seconds = eta.update(counts);
      metrics.runs.set({ state: 'done' }, counts.done);
      metrics.runs.set({ state: 'running' }, counts.running);
      metrics.runs.set({ state: 'queued' }, counts.queued);
      metrics.runs.set({ state: 'failed' }, counts.failed);
      metrics.eta.set(seconds ?? -1);
      metrics.workers.set(live.length);
      for (const name of knownWorkers) if (!live.some((w: WorkerBeat) => w.name === name)) metrics.workerRuns.remove({ worker: name });
      knownWorkers.clear();
      for (const w of live) {
        knownWorkers.add(w.name);
        metrics.workerRuns.set({ worker: w.name }, w.running.length);
      }
      const lines = statusLines(counts, seconds, live, now);
      // Printed when something changed (not the ETA or the clocks), at most every statusMs; else every 10× statusMs.
      const signature = JSON.stringify([counts, live.map((w) => [w.name, w.state, w.running.map((r) => r.key)])]);
      if ((signature !== lastStatus && now - lastPrinted >= statusMs) || now - lastPrinted >= 10 * statusMs) {
        for (const line of lines) log(line);
        lastStatus = signature;
        lastPrinted = now;
      }
      return counts;
    };

    while (stored.size + failed.size < byKey.size && !queueOptions.signal?.aborted) {
      await collect();
      await collectFailed();
      await report();
      if (stored.size + failed.size < byKey.size) await sleep(pollMs, queueOptions.signal);
    }
    const counts = await report();
    if (queueOptions.signal?.aborted)
      log(`queue: stopped collecting with ${counts.done}/${counts.total} runs stored; the workers go on, and the next start picks their records up`);
    else {
      const left = await q.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
      // Nothing left for workers on this grid: they stop looking at it (its jobs and records stay for a restart).
      if (Object.values(left).every((n) => n === 0)) await redis.zrem(keys.grids, id);
    }
    return [...failed.values()];
  } finally {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await queue?.close();
    redis.disconnect();
  }
}
