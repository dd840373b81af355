/**
 * The coordinator's runs on the queue (coordinator.ts): one job per pending run, its id the run key;
 * the records workers returned, handed on once each; the runs that failed on every try, with their logs.
 */
import type { Job, Queue } from 'bullmq';
import type { EvalConfig } from '../config.js';
import { isRunRecord, type RunRecord } from '../records/run-record.js';
import type { RunSpec } from '../run/run-key.js';
import { describeRun } from '../run/session.js';
import { jobData, type RunJobData } from './grid.js';
import type { RunCounts } from './status.js';

export interface FailedRun {
  key: string;
  label: string;
  reason: string;
  /** Times it was started. */
  attempts: number;
  /** Its log: which worker ran it, and what the worker and its child wrote. */
  log: string[];
}

const NO_RECORD = 'the job completed without a record of this run';

/** The record a job returned, if it is one of this run. */
function recordOf(job: Job | undefined, key: string): RunRecord | undefined {
  const value: unknown = job?.returnvalue;
  return isRunRecord(value) && value.key === key ? value : undefined;
}

/** The pending runs of one grid, as the queue holds them. */
export class GridRuns {
  /** Runs whose records were handed to onRecord. */
  readonly stored = new Set<string>();
  readonly failed = new Map<string, FailedRun>();
  private readonly byKey: ReadonlyMap<string, RunSpec>;

  constructor(
    private readonly queue: Queue<RunJobData, RunRecord>,
    private readonly jobs: typeof Job,
    private readonly grid: { id: string; config: EvalConfig },
    pending: readonly RunSpec[],
    private readonly onRecord: (record: RunRecord) => Promise<void>,
    private readonly log: (line: string) => void,
  ) {
    this.byKey = new Map(pending.map((run) => [jobData(grid.id, grid.config, run).key, run]));
  }

  get total(): number {
    return this.byKey.size;
  }

  /** Every run stored or failed on every try. */
  get settled(): boolean {
    return this.stored.size + this.failed.size >= this.byKey.size;
  }

  /** Hands on the records of completed jobs not stored yet; a job completed without one counts as failed. */
  async collect(): Promise<void> {
    for (const key of await this.queue.getRanges(['completed'], 0, -1, true)) {
      if (!this.byKey.has(key) || this.stored.has(key)) continue;
      const job = await this.jobs.fromId<RunJobData, RunRecord>(this.queue, key);
      const record = recordOf(job, key);
      if (!record) {
        if (!this.failed.has(key))
          this.failed.set(key, {
            key,
            label: describeRun(this.byKey.get(key)!),
            reason: NO_RECORD,
            attempts: job?.attemptsStarted ?? 0,
            log: [],
          });
        continue;
      }
      this.stored.add(key);
      await this.onRecord(record);
    }
  }

  /** Takes in the runs that failed on every try since the last look, and logs each with its log. */
  async collectFailed(): Promise<void> {
    for (const key of await this.queue.getRanges(['failed'], 0, -1)) {
      if (!this.byKey.has(key) || this.stored.has(key) || this.failed.has(key)) continue;
      const job = await this.jobs.fromId<RunJobData, RunRecord>(this.queue, key);
      const { logs } = await this.queue.getJobLogs(key, 0, -1, true);
      const run: FailedRun = {
        key,
        label: describeRun(this.byKey.get(key)!),
        reason: job?.failedReason ?? 'unknown',
        attempts: job?.attemptsStarted ?? 0,
        log: logs,
      };
      this.failed.set(key, run);
      this.log(`queue: FAILED ${run.label} (${key}) after ${run.attempts} tr${run.attempts === 1 ? 'y' : 'ies'}: ${run.reason}`);
      for (const line of run.log) this.log(`  | ${line}`);
    }
  }

  /**
   * Queues again the runs that failed before this start, with their tries reset, and those whose job
   * completed without a record of the run (removed here, so that enqueue adds them afresh); returns how many.
   */
  async retryFailedBefore(): Promise<number> {
    let retried = 0;
    for (const [key, run] of this.failed) {
      if (run.reason !== NO_RECORD) continue;
      const job = await this.jobs.fromId(this.queue, key);
      await job?.remove();
      this.failed.delete(key);
      retried += 1;
    }
    for (const key of await this.queue.getRanges(['failed'], 0, -1)) {
      if (!this.byKey.has(key) || this.stored.has(key)) continue;
      const job = await this.jobs.fromId(this.queue, key);
      await job?.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
      retried += 1;
    }
    return retried;
  }

  /** Adds a job for every run not stored (the queue ignores a job id it holds already); returns how many were offered. */
  async enqueue(retries: number): Promise<number> {
    const { id, config } = this.grid;
    const toAdd = [...this.byKey].filter(([key]) => !this.stored.has(key));
    for (let i = 0; i < toAdd.length; i += 500) {
      await this.queue.addBulk(
        toAdd.slice(i, i + 500).map(([, run]) => ({
          name: 'run',
          data: jobData(id, config, run),
          opts: { jobId: jobData(id, config, run).key, attempts: retries + 1, removeOnComplete: false, removeOnFail: false },
        })),
      );
    }
    return toAdd.length;
  }

  /** Runs by state; running: the grid's jobs a worker holds now. */
  async counts(): Promise<RunCounts> {
    const active = (await this.queue.getRanges(['active'], 0, -1)).filter((k) => this.byKey.has(k) && !this.stored.has(k)).length;
    const total = this.byKey.size;
    return {
      total,
      done: this.stored.size,
      running: active,
      failed: this.failed.size,
      queued: Math.max(0, total - this.stored.size - this.failed.size - active),
    };
  }
}
