/**
 * What the coordinator shows while a grid runs on the queue: runs done / running / queued / failed
 * with an ETA, and per worker what it runs. Workers write a heartbeat into the grid's workers hash;
 * the coordinator reads it back. Pure functions, so the lines can be tested without Redis.
 */

export interface RunningRun {
  key: string;
  /** describeRun's words: "mad eps=0.5 · random · 10000 · seed #2". */
  label: string;
  /** When the worker started it (ms since the epoch, the worker's clock). */
  since: number;
}

/** waiting: prepared, but every run left runs on another worker; it starts its children once one comes back. */
export type WorkerState = 'preparing' | 'waiting' | 'ready' | 'refused' | 'failed' | 'stopping';

/** One worker's heartbeat (JSON in the grid's workers hash, under its name). */
export interface WorkerBeat {
  name: string;
  host: string;
  pid: number;
  jobs: number;
  state: WorkerState;
  /** Why it refused the grid (fingerprint mismatch) or stopped serving it. */
  reason?: string;
  running: RunningRun[];
  /** Runs it finished for this grid. */
  finished: number;
  at: number;
}

/** Heartbeats are written every few seconds; one older than this is a worker that is gone. */
export const HEARTBEAT_MS = 2000;
export const BEAT_STALE_MS = 5 * HEARTBEAT_MS;

export function parseBeats(fields: Record<string, string>, now: number): { live: WorkerBeat[]; stale: string[] } {
  const live: WorkerBeat[] = [];
  const stale: string[] = [];
  for (const [name, json] of Object.entries(fields)) {
    try {
      const beat = JSON.parse(json) as WorkerBeat;
      if (typeof beat.at === 'number' && now - beat.at <= BEAT_STALE_MS && Array.isArray(beat.running)) live.push({ ...beat, name });
      else stale.push(name);
    } catch {
      stale.push(name);
    }
  }
  live.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { live, stale };
}

export interface RunCounts {
  /** The runs this coordinator waits for (pending when it started). */
  total: number;
  done: number;
  running: number;
  queued: number;
  failed: number;
}

/** Throughput since the first run this coordinator saw finish on the queue; ETA for what is left. */
export class EtaEstimator {
  private first?: { at: number; done: number };

  constructor(private readonly now: () => number = Date.now) {}

  /** Seconds left, or undefined before two finished runs give a rate. */
  update(counts: RunCounts): number | undefined {
    const at = this.now();
    if (!this.first) {
      if (counts.done > 0 || counts.running > 0) this.first = { at, done: counts.done };
      return undefined;
    }
    const finished = counts.done - this.first.done;
    const seconds = (at - this.first.at) / 1000;
    if (finished < 1 || seconds <= 0) return undefined;
    return ((counts.queued + counts.running) * seconds) / finished;
  }
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function statusLines(counts: RunCounts, eta: number | undefined, workers: readonly WorkerBeat[], now: number): string[] {
  const head = `queue: ${counts.done}/${counts.total} done · ${counts.running} running · ${counts.queued} queued · ${counts.failed} failed · ETA ${eta === undefined ? '—' : formatDuration(eta)} · ${workers.length} worker${workers.length === 1 ? '' : 's'}`;
  const lines = [head];
  for (const w of workers) {
    const what =
      w.state === 'refused' || w.state === 'failed'
        ? `${w.state}: ${w.reason ?? ''}`
        : w.state === 'preparing'
          ? 'preparing (data, victim, fingerprint)'
          : w.state === 'waiting'
            ? 'waiting for a run to take (no child process started)'
            : w.running.length === 0
              ? 'idle'
              : w.running.map((r) => `${r.label} (${formatDuration((now - r.since) / 1000)})`).join('; ');
    lines.push(`  ${w.name} [${w.running.length}/${w.jobs}, ${w.finished} done]: ${what}`);
  }
  return lines;
}
