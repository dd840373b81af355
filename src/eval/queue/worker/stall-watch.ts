/**
 * The BullMQ worker settings of a grid (the visibility timeout and retries it was announced with),
 * and the stalled check of a worker that takes none of its runs. Only a BullMQ worker's stalled
 * check puts a dead worker's run back in the queue; a worker waiting for a run to take checks too,
 * since the workers holding the grid's last runs may be the dead ones.
 */
import type { Worker, WorkerOptions } from 'bullmq';
import { bullConnection } from '../connect.js';
import type { GridKeys, GridMeta } from '../grid.js';
import type { QueueConnection } from '../redis-url.js';

/** Every BullMQ worker of this process on a grid, taking runs or not, applies the grid's own timeout and retries. */
export function gridWorkerOptions(meta: GridMeta, keys: GridKeys, connection: QueueConnection, name: string): WorkerOptions {
  return {
    connection: bullConnection(connection),
    prefix: keys.prefix,
    name,
    lockDuration: meta.visibilityMs,
    // Checked twice per visibility timeout: a dead worker's run is back in the queue within 1.5× of it.
    stalledInterval: Math.max(500, Math.floor(meta.visibilityMs / 2)),
    maxStalledCount: meta.retries,
    maxStartedAttempts: meta.retries + 1,
  };
}

/** A BullMQ worker without a processor: it takes no run, and runs the grid's stalled check until closed. */
export async function watchStalled(meta: GridMeta, keys: GridKeys, connection: QueueConnection, name: string, log: (line: string) => void): Promise<Worker> {
  const { Worker: BullWorker } = await import('bullmq');
  const watcher = new BullWorker(keys.queueName, null, gridWorkerOptions(meta, keys, connection, name));
  watcher.on('error', (error) => log(`grid ${meta.id}: queue error: ${error.message}`));
  await watcher.startStalledCheckTimer();
  return watcher;
}

/** The stalled checks of the grids whose runs left all run on other workers, kept to the grids named last. */
export class StalledChecks {
  private readonly watchers = new Map<string, Worker>();

  /** `open` reads the grid's settings and watches it; undefined for a grid without them (gone meanwhile). */
  constructor(private readonly open: (id: string) => Promise<Worker | undefined>) {}

  async keep(ids: readonly string[]): Promise<void> {
    for (const [id, watcher] of this.watchers) {
      if (ids.includes(id)) continue;
      this.watchers.delete(id);
      await watcher.close().catch(() => {});
    }
    for (const id of ids) {
      if (this.watchers.has(id)) continue;
      const watcher = await this.open(id);
      if (watcher) this.watchers.set(id, watcher);
    }
  }

  close(): Promise<void> {
    return this.keep([]);
  }
}
