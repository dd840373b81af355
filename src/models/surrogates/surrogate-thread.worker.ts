/**
 * The worker-thread side of loadThreadedSurrogate (threaded-surrogate.ts starts it; nothing else
 * should): starts the TF.js backend the main thread asked for, loads the surrogate with
 * loadSurrogate, then answers probs/gram requests. Inputs arrive as transferred buffers and results
 * leave the same way, so the main thread never runs the forward pass.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { initBackend } from '../tfjs/backend.js';
import { loadSurrogate } from './load-surrogate.js';
import type { SurrogateModel } from '../surrogate-model.js';
import { holdUntilReleased } from './call-hold.js';
import type { SerialisedError, ThreadReply, ThreadRequest, ThreadStart } from './threaded-surrogate.js';

const port = parentPort;
if (!port) throw new Error('surrogate-thread.worker is a worker thread entry; load a threaded surrogate with loadThreadedSurrogate()');

function serialise(error: unknown): SerialisedError {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error) };
  const { file, code } = error as Error & { file?: unknown; code?: unknown };
  return {
    name: error.name,
    message: error.message,
    stack: error.stack,
    file: typeof file === 'string' ? file : undefined,
    code: typeof code === 'string' ? code : undefined,
  };
}

/** The typed array's own buffer when it spans all of it (transferable), else a copy: never a view into wasm memory. */
function ownBuffer(values: Float32Array | Float64Array): ArrayBuffer {
  const { buffer } = values;
  if (buffer instanceof ArrayBuffer && values.byteOffset === 0 && values.byteLength === buffer.byteLength) return buffer;
  return values.slice().buffer as ArrayBuffer;
}

const reply = (message: ThreadReply, transfer: ArrayBuffer[] = []) => port.postMessage(message, transfer);

const { options, backend } = workerData as ThreadStart;
let surrogate: SurrogateModel | undefined;
/** Test hook: exit with this code when the next call arrives, leaving it unanswered (a crash mid-request). */
let exitOnNextCall: number | undefined;
/** Test hook: block this thread on the next call until the main thread releases this gate (holdSurrogateThreadOnNextCall). */
let holdNextCall: SharedArrayBuffer | undefined;

async function answer(request: Extract<ThreadRequest, { type: 'probs' | 'gram' }>): Promise<void> {
  const inputs = new Float32Array(request.inputs);
  try {
    if (!surrogate) throw new Error('the surrogate is not loaded');
    if (request.type === 'probs') {
      const probs = await surrogate.probsAsync(inputs, request.rows);
      const data = ownBuffer(probs.data);
      reply({ type: 'result', id: request.id, data, rows: probs.rows, cols: probs.cols }, [data]);
    } else {
      if (!surrogate.gramAsync) throw new Error('this surrogate has no Gram matrices (forward-only runtime)');
      const data = ownBuffer(await surrogate.gramAsync(inputs, request.rows));
      reply({ type: 'result', id: request.id, data, rows: request.rows, cols: surrogate.classes }, [data]);
    }
  } catch (error) {
    reply({ type: 'error', id: request.id, error: serialise(error) });
  }
}

port.on('message', (request: ThreadRequest) => {
  if (request.type === 'exit-on-next-call') {
    exitOnNextCall = request.code;
    return;
  }
  if (request.type === 'hold-next-call') {
    holdNextCall = request.gate;
    return;
  }
  if (exitOnNextCall !== undefined) process.exit(exitOnNextCall);
  if (holdNextCall) {
    const gate = holdNextCall;
    holdNextCall = undefined;
    holdUntilReleased(gate);
  }
  void answer(request);
});

try {
  const info = await initBackend({ prefer: backend, log: () => {} });
  surrogate = await loadSurrogate(options);
  reply({
    type: 'ready',
    classes: surrogate.classes,
    inputShape: [...surrogate.inputShape],
    differentiable: surrogate.differentiable,
    gram: typeof surrogate.gramAsync === 'function',
    backend: info,
  });
} catch (error) {
  reply({ type: 'failed', error: serialise(error) });
  // Nothing more to do here: the main thread terminates the worker when it reads the failure.
  port.close();
}
