/**
 * What the coordinator (coordinator.ts) tells about a grid's progress: the gauges on /metrics (runs
 * by state, ETA, live workers and their runs) and the status lines in its log, printed on a change.
 */
import http from 'node:http';
import type { Redis } from 'ioredis';
import { Gauge, Registry } from 'prom-client';
import type { GridKeys } from './grid.js';
import { EtaEstimator, parseBeats, statusLines, type RunCounts, type WorkerBeat } from './status.js';

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

export async function serveMetrics(registry: Registry, port: number, host: string): Promise<http.Server> {
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

/** Reads the workers' heartbeats, sets the gauges and prints the status lines. */
export class QueueStatus {
  private readonly metrics = createMetrics();
  private readonly eta = new EtaEstimator();
  private lastStatus = '';
  private lastPrinted = 0;
  private readonly knownWorkers = new Set<string>();
  private readonly toldRefusals = new Set<string>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: GridKeys,
    private readonly statusMs: number,
    private readonly log: (line: string) => void,
  ) {}

  get registry(): Registry {
    return this.metrics.registry;
  }

  async report(counts: RunCounts): Promise<void> {
    const now = Date.now();
    const { live, stale } = parseBeats(await this.redis.hgetall(this.keys.workers), now);
    if (stale.length) await this.redis.hdel(this.keys.workers, ...stale);
    this.tellRefusals(live);
    const seconds = this.eta.update(counts);
    this.setGauges(counts, seconds, live);
    const lines = statusLines(counts, seconds, live, now);
    // Printed when something changed (not the ETA or the clocks), at most every statusMs; else every 10× statusMs.
    const signature = JSON.stringify([counts, live.map((w) => [w.name, w.state, w.running.map((r) => r.key)])]);
    if ((signature !== this.lastStatus && now - this.lastPrinted >= this.statusMs) || now - this.lastPrinted >= 10 * this.statusMs) {
      for (const line of lines) this.log(line);
      this.lastStatus = signature;
      this.lastPrinted = now;
    }
  }

  /** Logs once each worker that refused the grid or cannot serve it, with why. */
  private tellRefusals(live: readonly WorkerBeat[]): void {
    for (const w of live) {
      if ((w.state === 'refused' || w.state === 'failed') && !this.toldRefusals.has(`${w.name} ${w.reason}`)) {
        this.toldRefusals.add(`${w.name} ${w.reason}`);
        this.log(`queue: worker ${w.name} ${w.state === 'refused' ? 'refused the grid' : 'cannot serve the grid'}: ${w.reason ?? 'no reason given'}`);
      }
    }
  }

  private setGauges(counts: RunCounts, seconds: number | undefined, live: readonly WorkerBeat[]): void {
    const { metrics, knownWorkers } = this;
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
  }
}
