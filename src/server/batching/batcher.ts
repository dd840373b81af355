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
  /** Detaches the abort listener, if any. */
  detach?(): void;
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
  // Requests with a chunk in the pass computing and rows left: back in line when the next pass is taken.
  let inPass: Job<Out>[] = [];
  let queuedRows = 0;
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let immediate: NodeJS.Immediate | undefined;
  let closed = false;
  // Rows per second of recent forward passes (exponential average), for Retry-After.
  let rowsPerSecond = 0;
  // Requests the last pass carried: the window only pays when requests arrive together.
  let lastPassRequests = 0;
  // Holds (see hold()): whether the last pass computed in this thread (its promise came back after
  // most of its work), how long the last pass and the last full one took, the promises waited for,
  // the timer of a hold in progress, and whether a hold ran since the last pass (once per gap).
  let blocking = false;
  let lastPassMs = 0;
  let fullPassMs = 0;
  const holds = new Set<Promise<unknown>>();
  let holding: NodeJS.Timeout | undefined;
  let heldThisGap = false;

  const setQueued = (delta: number): void => {
    queuedRows += delta;
    observer.queued?.(queuedRows);
  };

  const retryAfter = (extraRows: number): number => (rowsPerSecond > 0 ? Math.min(60, (queuedRows + extraRows) / rowsPerSecond) : 1);

  const fail = (job: Job<Out>, error: unknown): void => {
    if (job.settled) return;
    job.settled = true;
    job.detach?.();
    const index = queue.indexOf(job);
    if (index >= 0) queue.splice(index, 1);
    const parked = inPass.indexOf(job);
    if (parked >= 0) inPass.splice(parked, 1);
    // Its rows not yet sent to a pass no longer wait (those in the pass computing were counted out when taken).
    if (job.rows > job.next) setQueued(-(job.rows - job.next));
    job.next = job.rows;
    job.reject(error);
  };

  const waiting = (): boolean => queue.length > 0 || inPass.length > 0;

  /**
   * Takes up to maxBatchRows rows, one chunk per request in turn. The requests of the last pass with
   * rows left go behind those that arrived meanwhile; once the pass holds a request's first rows,
   * requests that have had a pass already wait for the next one (they keep their place in line).
   */
  const takeBatch = (): { parts: Part<Out>[]; rows: number } => {
    for (const job of inPass) queue.push(job);
    inPass = [];
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
        observer.queueWait?.((performance.now() - job.submitted) / 1000);
      }
      job.next += rows;
      filled += rows;
      if (job.next < job.rows) inPass.push(job);
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
  };

  const runBatch = async (): Promise<void> => {
    const { parts, rows } = takeBatch();
    if (rows === 0) return;
    lastPassRequests = new Set(parts.map((part) => part.job)).size;
    observer.batch?.(rows);
    const started = performance.now();
    try {
      const computing = forward(gather(parts, rows), rows);
      const syncMs = performance.now() - started;
      const out = await computing;
      lastPassMs = performance.now() - started;
      if (rows === maxBatchRows) fullPassMs = lastPassMs;
      blocking = syncMs >= 0.5 * lastPassMs;
      const seconds = Math.max(1e-6, lastPassMs / 1000);
      rowsPerSecond = rowsPerSecond === 0 ? rows / seconds : 0.8 * rowsPerSecond + 0.2 * (rows / seconds);
      scatter(parts, rows, out);
    } catch (error) {
      for (const part of parts) fail(part.job, error);
    }
  };

  /** Ends the hold in progress `handle` (its promises settled, or its time is up) and dispatches. */
  const endHold = (handle: NodeJS.Timeout): void => {
    if (holding !== handle) return;
    clearTimeout(handle);
    holding = undefined;
    dispatch();
  };

  const dispatch = (): void => {
    timer = undefined;
    immediate = undefined;
    if (closed || running || holding || !waiting()) return;
    if (blocking && holds.size > 0 && !heldThisGap) {
      heldThisGap = true;
      const handle = setTimeout(() => endHold(handle), Math.max(1, HOLD_SHARE * Math.max(fullPassMs, lastPassMs)));
      holding = handle;
      // On the next turn: what settled them (a defended answer) finishes its synchronous work first.
      void Promise.allSettled([...holds]).then(() => setImmediate(() => endHold(handle)));
      return;
    }
    heldThisGap = false;
    running = runBatch().finally(() => {
      running = undefined;
      // A request still in line when close() came (its chunk was computing) is refused now.
      if (closed) for (const job of [...inPass]) fail(job, new OverloadedError(`${what} is shutting down`, 1));
      // Requests that queued during this pass have waited already: next pass on the next turn,
      // after pending I/O (so a request arriving meanwhile joins the round robin first).
      if (!closed && waiting()) immediate = setImmediate(dispatch);
    });
  };

  const schedule = (): void => {
    if (closed || running || immediate || holding) return;
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
    if (queuedRows + rows > maxQueueRows)
      throw new OverloadedError(`${what} is busy (${queuedRows} rows waiting, limit ${maxQueueRows}); retry later`, retryAfter(rows));
  };

  const submit = (inputs: Float32Array, rows: number, signal?: AbortSignal): Promise<Out> => {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (closed) return Promise.reject(new OverloadedError(`${what} is shutting down`, 1));
    if (!Number.isInteger(rows) || rows < 1) return Promise.reject(new RequestFormatError(`request: ${rows} input rows; send at least one`));
    if (inputs.length !== rows * width)
      return Promise.reject(new RequestFormatError(`request: inputs hold ${inputs.length} values; ${rows} rows of ${width} need ${rows * width}`));
    try {
      admit(rows);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<Out>((resolve, reject) => {
      const job: Job<Out> = { inputs, rows, next: 0, done: 0, submitted: performance.now(), started: false, settled: false, resolve, reject };
      if (signal) {
        const onAbort = (): void => fail(job, signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        job.detach = () => signal.removeEventListener('abort', onAbort);
      }
      queue.push(job);
      setQueued(rows);
      schedule();
    });
  };

  const hold = (until: Promise<unknown>): void => {
    if (closed) return;
    holds.add(until);
    const settled = (): void => void holds.delete(until);
    until.then(settled, settled);
  };

  const close = async (): Promise<void> => {
    closed = true;
    if (timer) clearTimeout(timer);
    if (immediate) clearImmediate(immediate);
    if (holding) clearTimeout(holding);
    timer = undefined;
    immediate = undefined;
    holding = undefined;
    holds.clear();
    for (const job of [...queue, ...(running ? [] : inPass)]) fail(job, new OverloadedError(`${what} is shutting down`, 1));
    await running;
  };

  return {
    submit,
    admit,
    hold,
    get queuedRows() {
      return queuedRows;
    },
    close,
  };
}
