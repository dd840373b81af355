/**
 * A surrogate in a worker thread. On wasm and cpu (the default backends in Node) a forward pass is
 * synchronous work: a MobileNetV2 image holds the event loop for 100 ms or more. Here the model is
 * loaded by loadSurrogate inside a node:worker_threads Worker and every probsAsync / gramAsync call
 * is a message: the input rows are copied into a fresh buffer and transferred, the result is
 * transferred back, and the main thread's event loop stays free while the worker computes.
 *
 * Costs: a second copy of the model (and of the TF.js backend) in the worker's memory, one copy of
 * the input rows per call, a message round trip (well under a millisecond).
 *
 * When the worker dies (a crash, process.exit in native code, an out-of-memory kill of the thread)
 * every pending call and every later call rejects with SurrogateThreadError: the serving layer then
 * fails closed. The worker is not restarted: a model that crashed once (e.g. out of memory) would
 * likely crash again, and a silent reload would hide it; load a new surrogate (or restart the server).
 */
import { Worker } from 'node:worker_threads';
import type { ProbBatch } from '../../defenses/types.js';
import { currentBackend, type BackendInfo, type BackendName } from '../tfjs/backend.js';
import { BackendError, MissingProviderError, ModelError, ModelFileError, ModelInputError, SurrogateThreadError, UnsupportedModelError } from '../errors.js';
import type { LoadSurrogateOptions } from './load-surrogate.js';
import { SERIALISABLE_SURROGATE_OPTIONS } from './load-surrogate-schema.js';
import { keepOnnxRuntimeOffline } from '../onnx/telemetry.js';
import { checkRows } from '../surrogate-output.js';
import { createCallHoldGate, type CallHoldGate } from './call-hold.js';
import type { SurrogateModel } from '../surrogate-model.js';

/** What crosses into the worker: everything but a model object (which cannot be cloned). */
export type ThreadedSurrogateOptions = Omit<LoadSurrogateOptions, 'model' | 'thread' | 'backend' | 'check'> & {
  /** Refused with a ModelError: a model object lives in this thread's TF.js. Pass its directory (`dir`) or an ONNX file instead. */
  model?: unknown;
  /** The worker's TF.js backend; default the main thread's current one (MSD_BACKEND, inherited, wins over both). */
  backend?: BackendName;
};

export interface ThreadedSurrogate extends SurrogateModel {
  /** The backend the worker started (compare with currentBackend(): a native backend may not start in a thread). */
  readonly backend: BackendInfo;
  /** The worker's thread id. */
  readonly threadId: number;
}

/** @internal The worker's start-up data. */
export interface ThreadStart {
  options: Omit<LoadSurrogateOptions, 'model' | 'thread' | 'backend'>;
  backend?: BackendName;
}

/** @internal An error as it crosses the thread boundary. */
export interface SerialisedError {
  name: string;
  message: string;
  stack?: string;
  file?: string;
  code?: string;
}

/** @internal Main → worker. */
export type ThreadRequest =
  | { type: 'probs' | 'gram'; id: number; inputs: ArrayBuffer; rows: number }
  | { type: 'exit-on-next-call'; code: number }
  | { type: 'hold-next-call'; gate: SharedArrayBuffer };

/** @internal Worker → main. */
export type ThreadReply =
  | { type: 'ready'; classes: number; inputShape: number[]; differentiable: boolean; gram: boolean; backend: BackendInfo }
  | { type: 'failed'; error: SerialisedError }
  | { type: 'result'; id: number; data: ArrayBuffer; rows: number; cols: number }
  | { type: 'error'; id: number; error: SerialisedError };

const ERROR_CLASSES: Readonly<Record<string, new (message: string) => Error>> = {
  ModelError,
  UnsupportedModelError,
  ModelInputError,
  MissingProviderError,
  BackendError,
  SurrogateThreadError,
};

/** The worker's error as this thread's class (ModelFileError keeps its file), with the worker's stack. */
function revive(serialised: SerialisedError): Error {
  const { name, message, file, code, stack } = serialised;
  let error: Error;
  if (name === 'ModelFileError' && file !== undefined && message.startsWith(`${file}: `)) error = new ModelFileError(file, message.slice(file.length + 2));
  else if (ERROR_CLASSES[name]) error = new ERROR_CLASSES[name](message);
  else error = Object.assign(new Error(message), { name });
  if (code !== undefined) Object.assign(error, { code });
  if (stack) error.stack = `${stack}\n    (in the surrogate's worker thread)`;
  return error;
}

/**
 * The worker entry and how to start it: the compiled .js beside this file, or under tsx (this file
 * is .ts) a tiny eval'd loader that registers tsx in the worker first; Node 20 does not apply the
 * main thread's `--import tsx` hooks to a worker's entry module.
 */
function workerScript(): { script: string | URL; eval: boolean } {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return { script: new URL('./surrogate-thread.worker.js', here), eval: false };
  const entry = new URL('./surrogate-thread.worker.ts', here).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  return { script: `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`, eval: true };
}

interface Pending {
  resolve(reply: Extract<ThreadReply, { type: 'result' }>): void;
  reject(error: Error): void;
}

/** Hands of the live threaded surrogates, for the test hook below. */
const workers = new WeakMap<SurrogateModel, Worker>();

/**
 * Loads the surrogate `options` describe inside a worker thread (see the file comment). Rejects as
 * loadSurrogate would (ModelError, ModelFileError naming the file, ...), plus ModelError for a
 * `model` object and SurrogateThreadError when the worker cannot start.
 */
export function loadThreadedSurrogate(options: ThreadedSurrogateOptions): Promise<ThreadedSurrogate> {
  if (options.model !== undefined) {
    return Promise.reject(
      new ModelError(
        'a model object cannot be moved to a worker thread (it lives in this thread’s TF.js): pass its directory (dir) or an ONNX file (onnx) instead, or drop thread',
      ),
    );
  }
  const loadOptions: ThreadStart['options'] = {};
  // Copied one by one (names from loadSurrogate's schema) so that nothing uncloneable travels.
  for (const key of SERIALISABLE_SURROGATE_OPTIONS) if (options[key] !== undefined) (loadOptions as Record<string, unknown>)[key] = options[key];
  const start: ThreadStart = { options: loadOptions, backend: options.backend ?? currentBackend()?.name };
  // The worker's process.env is its own copy: only this thread's reaches onnxruntime's getenv.
  keepOnnxRuntimeOffline();
  const { script, eval: isEval } = workerScript();
  let worker: Worker;
  try {
    worker = new Worker(script, { eval: isEval, workerData: start, stdout: false, stderr: false });
  } catch (error) {
    return Promise.reject(new SurrogateThreadError(`cannot start the surrogate's worker thread: ${(error as Error).message}`));
  }

  const pending = new Map<number, Pending>();
  let nextId = 1;
  let gone: SurrogateThreadError | undefined;
  let lastError: Error | undefined;

  const failAll = (error: SurrogateThreadError) => {
    gone ??= error;
    for (const call of pending.values()) call.reject(gone);
    pending.clear();
    worker.unref();
  };

  return new Promise<ThreadedSurrogate>((resolveLoad, rejectLoad) => {
    let loading = true;
    worker.on('error', (error) => {
      lastError = error;
    });
    worker.on('exit', (code) => {
      const why = lastError ? `: ${lastError.message}` : '';
      const error = new SurrogateThreadError(
        `the surrogate's worker thread exited with code ${code}${why}; its calls fail (the defense fails closed) until a new surrogate is loaded`,
      );
      if (loading) {
        loading = false;
        rejectLoad(
          lastError instanceof ModelError ? lastError : new SurrogateThreadError(`the surrogate's worker thread exited with code ${code} while loading${why}`),
        );
      }
      failAll(error);
    });
    worker.on('message', (message: ThreadReply) => {
      if (message.type === 'ready') {
        loading = false;
        // Idle: a loaded surrogate alone must not keep the process alive; calls ref the worker while they wait.
        worker.unref();
        resolveLoad(proxy(message));
      } else if (message.type === 'failed') {
        loading = false;
        rejectLoad(revive(message.error));
        void worker.terminate();
      } else {
        const call = pending.get(message.id);
        if (!call) return;
        pending.delete(message.id);
        if (pending.size === 0) worker.unref();
        if (message.type === 'result') call.resolve(message);
        else call.reject(revive(message.error));
      }
    });
  });

  function send(type: 'probs' | 'gram', inputs: Float32Array, rows: number, width: number): Promise<Extract<ThreadReply, { type: 'result' }>> {
    if (gone) return Promise.reject(gone);
    try {
      checkRows(inputs, rows, width);
    } catch (error) {
      return Promise.reject(error);
    }
    // A fresh buffer of exactly these rows, transferred: the caller's array stays usable and nothing else is copied.
    const copy = inputs.slice();
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      if (pending.size === 1) worker.ref();
      worker.postMessage({ type, id, inputs: copy.buffer, rows } satisfies ThreadRequest, [copy.buffer]);
    });
  }

  function proxy(ready: Extract<ThreadReply, { type: 'ready' }>): ThreadedSurrogate {
    const inputShape = Object.freeze([...ready.inputShape]);
    const width = inputShape.reduce((a, b) => a * b, 1);
    const surrogate: ThreadedSurrogate = {
      classes: ready.classes,
      inputShape,
      differentiable: ready.differentiable,
      backend: ready.backend,
      threadId: worker.threadId,
      failure: () => gone,
      async probsAsync(inputs: Float32Array, rows: number): Promise<ProbBatch> {
        const result = await send('probs', inputs, rows, width);
        return { rows: result.rows, cols: result.cols, data: new Float32Array(result.data) };
      },
      ...(ready.gram
        ? {
            async gramAsync(inputs: Float32Array, rows: number): Promise<Float64Array> {
              return new Float64Array((await send('gram', inputs, rows, width)).data);
            },
          }
        : {}),
      dispose() {
        failAll(new SurrogateThreadError('the threaded surrogate was disposed'));
        void worker.terminate();
      },
    };
    workers.set(surrogate, worker);
    return surrogate;
  }
}

function workerOf(surrogate: SurrogateModel): Worker {
  const worker = workers.get(surrogate);
  if (!worker) throw new ModelError('not a threaded surrogate');
  return worker;
}

/** Test hook: the worker exits with `code` when the next call reaches it, leaving that call unanswered. */
export function exitSurrogateThreadOnNextCall(surrogate: SurrogateModel, code = 7): void {
  workerOf(surrogate).postMessage({ type: 'exit-on-next-call', code } satisfies ThreadRequest);
}

/**
 * Test hook: the worker blocks its thread on the next call it receives, before computing it, until
 * release(). While holding() is true the worker is provably busy with that call, whatever the
 * machine's speed: what the main thread does meanwhile happens while the worker computes.
 */
export function holdSurrogateThreadOnNextCall(surrogate: SurrogateModel): Omit<CallHoldGate, 'buffer'> {
  const worker = workerOf(surrogate);
  const { buffer, holding, release } = createCallHoldGate();
  worker.postMessage({ type: 'hold-next-call', gate: buffer } satisfies ThreadRequest);
  return { holding, release };
}
