/**
 * The batcher's line of requests (see batcher.ts for the turns it keeps): who waits, which rows each
 * has sent and got back, how many rows wait in all, and how one forward pass is cut from the line,
 * filled and answered.
 */
import { performance } from 'node:perf_hooks';
import type { BatcherObserver } from './batcher.js';

export interface Job<Out> {
  inputs: Float32Array;
  rows: number;
  /** Next row to send to a forward pass. */
  next: number;
  /** Rows computed so far. */
  done: number;
  submitted: number;
  started: boolean;
  settled: boolean;
  result?: Out;
  resolve(value: Out): void;
  reject(error: unknown): void;
  /** Detaches the abort listener, if any. */
  detach?(): void;
}

export interface Part<Out> {
  job: Job<Out>;
  /** First row of the job in this part. */
  start: number;
  rows: number;
  /** First row of the part in the batch. */
  offset: number;
}

/** The rows of one forward pass: one part per request. */
export interface Pass<Out> {
  parts: Part<Out>[];
  rows: number;
}

export class BatchQueue<Out extends Float32Array | Float64Array> {
  private readonly queue: Job<Out>[] = [];
  // Requests with a chunk in the pass computing and rows left: back in line when the next pass is taken.
  private inPass: Job<Out>[] = [];
  /** Rows waiting for a forward pass (not counting the one computing). */
  queuedRows = 0;

  constructor(
    private readonly maxBatchRows: number,
    private readonly observer: BatcherObserver,
  ) {}

  /** Whether a request has rows left to send. */
  waiting(): boolean {
    return this.queue.length > 0 || this.inPass.length > 0;
  }

  add(job: Job<Out>): void {
    this.queue.push(job);
    this.setQueued(job.rows);
  }

  /** Rejects a request that has not settled: its rows that wait leave the line. */
  fail(job: Job<Out>, error: unknown): void {
    if (job.settled) return;
    job.settled = true;
    job.detach?.();
    const index = this.queue.indexOf(job);
    if (index >= 0) this.queue.splice(index, 1);
    const parked = this.inPass.indexOf(job);
    if (parked >= 0) this.inPass.splice(parked, 1);
    // Its rows not yet sent to a pass no longer wait (those in the pass computing were counted out when taken).
    if (job.rows > job.next) this.setQueued(-(job.rows - job.next));
    job.next = job.rows;
    job.reject(error);
  }

  /** Rejects the requests in line, and those of the pass computing unless `computing` (they are refused once it ends). */
  failAll(error: () => unknown, computing: boolean): void {
    for (const job of [...this.queue, ...(computing ? [] : this.inPass)]) this.fail(job, error());
  }

  /** Rejects the requests of the last pass that have rows left. */
  failInPass(error: () => unknown): void {
    for (const job of [...this.inPass]) this.fail(job, error());
  }

  /**
   * Takes up to maxBatchRows rows, one chunk per request in turn. The requests of the last pass with
   * rows left go behind those that arrived meanwhile; once the pass holds a request's first rows,
   * requests that have had a pass already wait for the next one (they keep their place in line).
   */
  take(): Pass<Out> {
    const { queue, maxBatchRows } = this;
    for (const job of this.inPass) queue.push(job);
    this.inPass = [];
    const parts: Part<Out>[] = [];
    let filled = 0;
    let newcomer = false;
    for (let i = 0; filled < maxBatchRows && i < queue.length; ) {
      const job = queue[i];
      if (newcomer && job.started) {
        i++;
        continue;
      }
      queue.splice(i, 1);
      const rows = Math.min(job.rows - job.next, maxBatchRows - filled);
      parts.push({ job, start: job.next, rows, offset: filled });
      if (!job.started) {
        job.started = true;
        newcomer = true;
        this.observer.queueWait?.((performance.now() - job.submitted) / 1000);
      }
      job.next += rows;
      filled += rows;
      if (job.next < job.rows) this.inPass.push(job);
    }
    this.setQueued(-filled);
    return { parts, rows: filled };
  }

  private setQueued(delta: number): void {
    this.queuedRows += delta;
    this.observer.queued?.(this.queuedRows);
  }
}

/** The pass's input rows: the one request's rows as they are, or the parts copied side by side. */
export function gather<Out>({ parts, rows }: Pass<Out>, width: number): Float32Array {
  if (parts.length === 1) {
    const { job, start } = parts[0];
    return job.inputs.subarray(start * width, (start + rows) * width);
  }
  const batch = new Float32Array(rows * width);
  for (const { job, start, rows: n, offset } of parts) batch.set(job.inputs.subarray(start * width, (start + n) * width), offset * width);
  return batch;
}

/** Copies each part's answers to its request, and resolves the requests that have all their rows. */
export function scatter<Out extends Float32Array | Float64Array>({ parts, rows }: Pass<Out>, out: Out, what: string): void {
  const outWidth = out.length / rows;
  if (!Number.isInteger(outWidth) || outWidth < 1) throw new Error(`${what} answered ${out.length} values for ${rows} rows`);
  for (const { job, start, rows: n, offset } of parts) {
    if (job.settled) continue;
    job.result ??= new (out.constructor as new (length: number) => Out)(job.rows * outWidth);
    if (job.result.length !== job.rows * outWidth)
      throw new Error(`${what} answered ${outWidth} values per row, not ${job.result.length / job.rows} as before`);
    job.result.set(out.subarray(offset * outWidth, (offset + n) * outWidth), start * outWidth);
    job.done += n;
    if (job.done === job.rows) {
      job.settled = true;
      job.detach?.();
      job.resolve(job.result);
    }
  }
}
