/**
 * Dynamic batching for a model's forward pass: requests arriving within `windowMs` share one call of
 * `forward` (at most `maxBatchRows` rows), as model servers do. One forward pass runs at a time (the
 * tfjs wasm and cpu backends compute on the main thread), and the event loop gets a turn between
 * passes, so no request holds the loop for longer than one batch. A request larger than a batch is
 * split into chunks, and chunks of different requests take turns (round robin): a small request that
 * arrives while a large one is computing waits for one batch, not for the whole large request.
 *
 * Rows waiting past `maxQueueRows` are refused at once (503, Retry-After) rather than held in memory.
 * A failed forward pass rejects every request with rows in it; none gets a partial answer.
 */
import { performance } from 'node:perf_hooks';
import { OverloadedError, RequestFormatError } from '../errors.js';
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
  /** The forward pass of `rows` rows, computed in shared batches; rejects with OverloadedError when the queue is full. */
  submit(inputs: Float32Array, rows: number): Promise<Out>;
  /** Rows waiting for a forward pass (not counting the one computing). */
  readonly queuedRows: number;
  /** Throws the OverloadedError submit would reject with if `rows` rows came now (a proxy asks before forwarding). */
  admit(rows: number): void;
  /** Refuses new work, rejects what waits (503), and resolves once the forward pass in flight has finished. Clears every timer. */
  close(): Promise<void>;
}

interface Job<Out> {
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
}

interface Part<Out> {
  job: Job<Out>;
  /** First row of the job in this part. */
  start: number;
  rows: number;
  /** First row of the part in the batch. */
  offset: number;
}

export function createBatcher<Out extends Float32Array | Float64Array>(forward: BatchForward<Out>, config: BatcherConfig): Batcher<Out> {
  const { windowMs, maxBatchRows, maxQueueRows, width, observer = {} } = config;
  const what = config.what ?? 'the model';
  const queue: Job<Out>[] = [];
  let queuedRows = 0;
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let immediate: NodeJS.Immediate | undefined;
  let closed = false;
  // Rows per second of recent forward passes (exponential average), for Retry-After.
  let rowsPerSecond = 0;
  // Requests the last pass carried: the window only pays when requests arrive together.
  let lastPassRequests = 0;

  const setQueued = (delta: number): void => {
    queuedRows += delta;
    observer.queued?.(queuedRows);
  };

  const retryAfter = (extraRows: number): number => (rowsPerSecond > 0 ? Math.min(60, (queuedRows + extraRows) / rowsPerSecond) : 1);

  const fail = (job: Job<Out>, error: unknown): void => {
    if (job.settled) return;
    job.settled = true;
    const index = queue.indexOf(job);
    if (index >= 0) {
      queue.splice(index, 1);
      setQueued(-(job.rows - job.next));
    }
    job.reject(error);
  };

  /** Takes up to maxBatchRows rows, one chunk per request in turn; a request with rows left goes to the back. */
  const takeBatch = (): { parts: Part<Out>[]; rows: number } => {
    const parts: Part<Out>[] = [];
    let filled = 0;
    while (filled < maxBatchRows && queue.length > 0) {
      const job = queue.shift()!;
      const rows = Math.min(job.rows - job.next, maxBatchRows - filled);
      parts.push({ job, start: job.next, rows, offset: filled });
      if (!job.started) {
        job.started = true;
        observer.queueWait?.((performance.now() - job.submitted) / 1000);
      }
      job.next += rows;
      filled += rows;
      if (job.next < job.rows) queue.push(job);
    }
    setQueued(-filled);
    return { parts, rows: filled };
  };

  const gather = (parts: Part<Out>[], rows: number): Float32Array => {
    if (parts.length === 1) {
      const { job, start } = parts[0];
      return job.inputs.subarray(start * width, (start + rows) * width);
    }
    const batch = new Float32Array(rows * width);
    for (const { job, start, rows: n, offset } of parts) batch.set(job.inputs.subarray(start * width, (start + n) * width), offset * width);
    return batch;
  };

  const scatter = (parts: Part<Out>[], rows: number, out: Out): void => {
    const outWidth = out.length / rows;
    if (!Number.isInteger(outWidth) || outWidth < 1) throw new Error(`${what} answered ${out.length} values for ${rows} rows`);
    for (const { job, start, rows: n, offset } of parts) {
      if (job.settled) continue;
      job.result ??= new (out.constructor as new (length: number) => Out)(job.rows * outWidth);
      if (job.result.length !== job.rows * outWidth) throw new Error(`${what} answered ${outWidth} values per row, not ${job.result.length / job.rows} as before`);
      job.result.set(out.subarray(offset * outWidth, (offset + n) * outWidth), start * outWidth);
      job.done += n;
      if (job.done === job.rows) {
        job.settled = true;
        job.resolve(job.result);
      }
    }
  };

  const runBatch = async (): Promise<void> => {
    const { parts, rows } = takeBatch();
    if (rows === 0) return;
    lastPassRequests = new Set(parts.map((part) => part.job)).size;
    observer.batch?.(rows);
    const started = performance.now();
    try {
      const out = await forward(gather(parts, rows), rows);
      const seconds = Math.max(1e-6, (performance.now() - started) / 1000);
      rowsPerSecond = rowsPerSecond === 0 ? rows / seconds : 0.8 * rowsPerSecond + 0.2 * (rows / seconds);
      scatter(parts, rows, out);
    } catch (error) {
      for (const part of parts) fail(part.job, error);
    }
  };

  const dispatch = (): void => {
    timer = undefined;
    immediate = undefined;
    if (closed || running || queue.length === 0) return;
    running = runBatch().finally(() => {
      running = undefined;
      // Requests that queued during this pass have waited already: next pass on the next turn,
      // after pending I/O (so a request arriving meanwhile joins the round robin first).
      if (!closed && queue.length > 0) immediate = setImmediate(dispatch);
    });
  };

  const schedule = (): void => {
    if (closed || running || immediate) return;
    // A lone client (the last pass carried one request) gains nothing by waiting: its next request
    // goes at once, and the window comes back as soon as requests share a pass again.
    if (queuedRows >= maxBatchRows || windowMs === 0 || lastPassRequests <= 1) {
      if (timer) clearTimeout(timer);
      timer = undefined;
      immediate = setImmediate(dispatch);
      return;
    }
    timer ??= setTimeout(dispatch, windowMs);
  };

  const admit = (rows: number): void => {
    if (closed) throw new OverloadedError(`${what} is shutting down`, 1);
    if (queuedRows + rows > maxQueueRows) throw new OverloadedError(`${what} is busy (${queuedRows} rows waiting, limit ${maxQueueRows}); retry later`, retryAfter(rows));
  };

  const submit = (inputs: Float32Array, rows: number): Promise<Out> => {
    if (closed) return Promise.reject(new OverloadedError(`${what} is shutting down`, 1));
    if (!Number.isInteger(rows) || rows < 1) return Promise.reject(new RequestFormatError(`request: ${rows} input rows; send at least one`));
    if (inputs.length !== rows * width) return Promise.reject(new RequestFormatError(`request: inputs hold ${inputs.length} values; ${rows} rows of ${width} need ${rows * width}`));
    try {
      admit(rows);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<Out>((resolve, reject) => {
      queue.push({ inputs, rows, next: 0, done: 0, submitted: performance.now(), started: false, settled: false, resolve, reject });
      setQueued(rows);
      schedule();
    });
  };

  const close = async (): Promise<void> => {
    closed = true;
    if (timer) clearTimeout(timer);
    if (immediate) clearImmediate(immediate);
    timer = undefined;
    immediate = undefined;
    for (const job of [...queue]) fail(job, new OverloadedError(`${what} is shutting down`, 1));
    await running;
  };

  return {
    submit,
    admit,
    get queuedRows() {
      return queuedRows;
    },
    close,
  };
}
