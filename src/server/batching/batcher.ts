/**
 * Dynamic batching for a model's forward pass: requests arriving within `windowMs` share one call of
 * `forward` (at most `maxBatchRows` rows), as model servers do. One forward pass runs at a time (the
 * tfjs wasm and cpu backends compute on the main thread), and the event loop gets a turn between
 * passes, so no request holds the loop for longer than one batch. A request larger than a batch is
 * split into chunks, and chunks of different requests take turns (round robin): a small request that
 * arrives while a large one is computing waits for the pass in flight, then goes in the very next one.
 *
 * Turns: a request whose chunk is computing goes back in line when the next pass is taken, behind
 * every request that arrived meanwhile (not when its chunk was taken: a newcomer would then wait for
 * its next chunk too). A pass that carries a request's first rows is not filled up with the rest of
 * requests that have had a pass already: the newcomer's answer would wait for their rows (a one-row
 * request would pay for a 32-row pass); newcomers still share a pass with each other, and a request
 * that has had a pass keeps its place in line for the next one.
 * A request may be cancelled (an AbortSignal): its rows that wait leave the queue at once.
 *
 * Holds: when the forward pass computes in this thread (wasm, cpu: it blocks the event loop), a
 * request whose rows are computed may still wait for other I/O (the proxy's upstream answer); if the
 * next chunk started at once, that I/O would be read only once the chunk ends. hold(promise) asks the
 * next pass to wait until the promise settles, for at most a quarter of a full pass, once per gap
 * between passes. Passes that compute elsewhere (a worker thread, onnxruntime) never wait.
 *
 * Rows waiting past `maxQueueRows` are refused at once (503, Retry-After) rather than held in memory.
 * A failed forward pass rejects every request with rows in it; none gets a partial answer.
 */
import { performance } from 'node:perf_hooks';
import { OverloadedError, RequestFormatError } from '../errors.js';
import { BatchQueue, gather, scatter, type Job } from './batch-queue.js';
import type { ResolvedBatching } from './options.js';

/** One forward pass: `rows` rows of `width` values in, `rows` × (output width) values out, row-major. */
export type BatchForward<Out extends Float32Array | Float64Array> = (inputs: Float32Array, rows: number) => Promise<Out>;

export interface BatcherObserver {
  /** Rows in each forward pass. */
  batch?(rows: number): void;
  /** Seconds a request waited from submission to its first rows entering a forward pass. */
  queueWait?(seconds: number): void;
  /** Rows waiting, after every change. */
  queued?(rows: number): void;
}

export interface BatcherConfig extends Pick<ResolvedBatching, 'windowMs' | 'maxBatchRows' | 'maxQueueRows'> {
  /** Values per input row. */
  width: number;
  /** What the batcher computes, for error messages ("the surrogate"). */
  what?: string;
  observer?: BatcherObserver;
}

export interface Batcher<Out extends Float32Array | Float64Array> {
  /**
   * The forward pass of `rows` rows, computed in shared batches; rejects with OverloadedError when the
   * queue is full. Once `signal` aborts, the rows not yet computed leave the queue and the promise
   * rejects with the signal's reason (a pass already computing finishes; its rows are dropped).
   */
  submit(inputs: Float32Array, rows: number, signal?: AbortSignal): Promise<Out>;
  /** Rows waiting for a forward pass (not counting the one computing). */
  readonly queuedRows: number;
  /** Throws the OverloadedError submit would reject with if `rows` rows came now (a proxy asks before forwarding). */
  admit(rows: number): void;
  /**
   * The next forward pass waits until `until` settles (at most a quarter of a full pass), when passes
   * block this thread: a request whose rows are computed gets its pending I/O read before the next
   * chunk holds the event loop (see the file comment).
   */
  hold(until: Promise<unknown>): void;
  /** Refuses new work, rejects what waits (503), and resolves once the forward pass in flight has finished. Clears every timer. */
  close(): Promise<void>;
}

/** The longest a hold delays the next pass, as a share of a full pass's duration. */
export const HOLD_SHARE = 0.25;

/** How the recent forward passes went: their speed (for Retry-After) and whether they block this thread (for holds). */
class PassTimes {
  // Rows per second of recent forward passes (exponential average).
  rowsPerSecond = 0;
  // Whether the last pass computed in this thread (its promise came back after most of its work).
  blocking = false;
  private lastPassMs = 0;
  private fullPassMs = 0;

  /** A pass of `rows` rows (`full`: as many as a pass takes) whose call returned after `syncMs` and answered after `totalMs`. */
  record(rows: number, full: boolean, syncMs: number, totalMs: number): void {
    this.lastPassMs = totalMs;
    if (full) this.fullPassMs = totalMs;
    this.blocking = syncMs >= 0.5 * totalMs;
    const seconds = Math.max(1e-6, totalMs / 1000);
    this.rowsPerSecond = this.rowsPerSecond === 0 ? rows / seconds : 0.8 * this.rowsPerSecond + 0.2 * (rows / seconds);
  }

  /** The longest a hold delays the next pass. */
  holdMs(): number {
    return Math.max(1, HOLD_SHARE * Math.max(this.fullPassMs, this.lastPassMs));
  }
}

/** The batcher's state and turns; createBatcher hands out its public methods. */
class DynamicBatcher<Out extends Float32Array | Float64Array> {
  private readonly windowMs: number;
  private readonly maxBatchRows: number;
  private readonly maxQueueRows: number;
  private readonly width: number;
  private readonly observer: BatcherObserver;
  private readonly what: string;
  private readonly line: BatchQueue<Out>;
  private readonly times = new PassTimes();
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private closed = false;
  // Requests the last pass carried: the window only pays when requests arrive together.
  private lastPassRequests = 0;
  // Holds (see hold()): the promises waited for, the timer of a hold in progress, and whether a hold
  // ran since the last pass (once per gap).
  private readonly holds = new Set<Promise<unknown>>();
  private holding: NodeJS.Timeout | undefined;
  private heldThisGap = false;

  constructor(
    private readonly forward: BatchForward<Out>,
    config: BatcherConfig,
  ) {
    ({ windowMs: this.windowMs, maxBatchRows: this.maxBatchRows, maxQueueRows: this.maxQueueRows, width: this.width } = config);
    this.observer = config.observer ?? {};
    this.what = config.what ?? 'the model';
    this.line = new BatchQueue<Out>(this.maxBatchRows, this.observer);
  }

  get queuedRows(): number {
    return this.line.queuedRows;
  }

  admit(rows: number): void {
    const { what, maxQueueRows, queuedRows } = this;
    if (this.closed) throw this.shuttingDown();
    if (queuedRows + rows > maxQueueRows)
      throw new OverloadedError(`${what} is busy (${queuedRows} rows waiting, limit ${maxQueueRows}); retry later`, this.retryAfter(rows));
  }

  submit(inputs: Float32Array, rows: number, signal?: AbortSignal): Promise<Out> {
    const { width } = this;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.closed) return Promise.reject(this.shuttingDown());
    if (!Number.isInteger(rows) || rows < 1) return Promise.reject(new RequestFormatError(`request: ${rows} input rows; send at least one`));
    if (inputs.length !== rows * width)
      return Promise.reject(new RequestFormatError(`request: inputs hold ${inputs.length} values; ${rows} rows of ${width} need ${rows * width}`));
    try {
      this.admit(rows);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<Out>((resolve, reject) => {
      const job: Job<Out> = { inputs, rows, next: 0, done: 0, submitted: performance.now(), started: false, settled: false, resolve, reject };
      if (signal) {
        const onAbort = (): void => this.line.fail(job, signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        job.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.line.add(job);
      this.schedule();
    });
  }

  hold(until: Promise<unknown>): void {
    if (this.closed) return;
    this.holds.add(until);
    const settled = (): void => void this.holds.delete(until);
    until.then(settled, settled);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    if (this.holding) clearTimeout(this.holding);
    this.timer = undefined;
    this.immediate = undefined;
    this.holding = undefined;
    this.holds.clear();
    this.line.failAll(() => this.shuttingDown(), this.running !== undefined);
    await this.running;
  }

  private shuttingDown(): OverloadedError {
    return new OverloadedError(`${this.what} is shutting down`, 1);
  }

  private retryAfter(extraRows: number): number {
    const { rowsPerSecond } = this.times;
    return rowsPerSecond > 0 ? Math.min(60, (this.queuedRows + extraRows) / rowsPerSecond) : 1;
  }

  private schedule(): void {
    if (this.closed || this.running || this.immediate || this.holding) return;
    // A lone client (the last pass carried one request) gains nothing by waiting: its next request
    // goes at once, and the window comes back as soon as requests share a pass again.
    if (this.queuedRows >= this.maxBatchRows || this.windowMs === 0 || this.lastPassRequests <= 1) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.immediate = setImmediate(() => this.dispatch());
      return;
    }
    this.timer ??= setTimeout(() => this.dispatch(), this.windowMs);
  }

  private dispatch(): void {
    this.timer = undefined;
    this.immediate = undefined;
    if (this.closed || this.running || this.holding || !this.line.waiting()) return;
    if (this.times.blocking && this.holds.size > 0 && !this.heldThisGap) {
      this.startHold();
      return;
    }
    this.heldThisGap = false;
    this.running = this.runBatch().finally(() => {
      this.running = undefined;
      // A request still in line when close() came (its chunk was computing) is refused now.
      if (this.closed) this.line.failInPass(() => this.shuttingDown());
      // Requests that queued during this pass have waited already: next pass on the next turn,
      // after pending I/O (so a request arriving meanwhile joins the round robin first).
      if (!this.closed && this.line.waiting()) this.immediate = setImmediate(() => this.dispatch());
    });
  }

  /** Delays the next pass until the held promises settle, or its time is up. */
  private startHold(): void {
    this.heldThisGap = true;
    const handle = setTimeout(() => this.endHold(handle), this.times.holdMs());
    this.holding = handle;
    // On the next turn: what settled them (a defended answer) finishes its synchronous work first.
    void Promise.allSettled([...this.holds]).then(() => setImmediate(() => this.endHold(handle)));
  }

  /** Ends the hold in progress `handle` (its promises settled, or its time is up) and dispatches. */
  private endHold(handle: NodeJS.Timeout): void {
    if (this.holding !== handle) return;
    clearTimeout(handle);
    this.holding = undefined;
    this.dispatch();
  }

  private async runBatch(): Promise<void> {
    const pass = this.line.take();
    const { parts, rows } = pass;
    if (rows === 0) return;
    this.lastPassRequests = new Set(parts.map((part) => part.job)).size;
    this.observer.batch?.(rows);
    const started = performance.now();
    try {
      const computing = this.forward(gather(pass, this.width), rows);
      const syncMs = performance.now() - started;
      const out = await computing;
      this.times.record(rows, rows === this.maxBatchRows, syncMs, performance.now() - started);
      scatter(pass, out, this.what);
    } catch (error) {
      for (const part of parts) this.line.fail(part.job, error);
    }
  }
}

export function createBatcher<Out extends Float32Array | Float64Array>(forward: BatchForward<Out>, config: BatcherConfig): Batcher<Out> {
  const batcher = new DynamicBatcher(forward, config);
  return {
    submit: (inputs, rows, signal) => batcher.submit(inputs, rows, signal),
    admit: (rows) => batcher.admit(rows),
    hold: (until) => batcher.hold(until),
    get queuedRows() {
      return batcher.queuedRows;
    },
    close: () => batcher.close(),
  };
}
