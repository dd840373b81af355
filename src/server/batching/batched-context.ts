/**
 * A ContextProvider whose surrogate work is asynchronous and batched: concurrent requests share
 * forward passes (one batcher per model: the surrogate's softmax, its Gram matrices for the full
 * Jacobian, the misinformation model's softmax), large requests are split into chunks that take
 * turns with other requests, a full queue answers 503 with Retry-After, and a request over
 * maxRowsPerRequest answers 413 before any work. Any failure rejects: the perturber then withholds
 * the answer (fail closed).
 *
 *   const context = batchedSurrogateContext({ surrogate: asyncSurrogate(await Surrogate.load(dir)) }, { windowMs: 2 });
 *   app.post('/infer', express.json(), poisonPredictions({ defense: 'mad-argmax:eps=0.8', context }), route);
 *   // on shutdown: await context.close();
 */
import { inputKeys, nonDifferentiableMessage } from '../../models/context-keys.js';
import { markLacksGram } from '../provider-capabilities.js';
import type { ContextNeed, DefenseContext, ProbBatch } from '../../defenses/types.js';
import { RequestFormatError, ServingError, ServingOptionError } from '../errors.js';
import type { ServingMetrics } from '../metrics.js';
import type { ContextProvider, ContextProviderHooks } from '../perturber.js';
import type { InputRows } from '../protocols/index.js';
import { createBatcher, type Batcher, type BatcherObserver } from './batcher.js';
import { batchingObservers, type BatchedModel } from './metrics.js';
import { resolveBatching, type BatchingOptions, type ResolvedBatching } from './options.js';

/** What the batched context needs of a model: the asynchronous half of SurrogateModel. */
export interface AsyncProbabilityModel {
  readonly classes: number;
  readonly inputShape: readonly number[];
  /** False for forward-only runtimes (ONNX, GraphModel): no Gram matrices. */
  readonly differentiable?: boolean;
  probsAsync(inputs: Float32Array, rows: number): Promise<ProbBatch>;
  gramAsync?(inputs: Float32Array, rows: number): Promise<Float64Array>;
  /** Why the model can no longer answer (see SurrogateModel.failure). */
  failure?(): Error | undefined;
}

export interface BatchedContextModels {
  /** MAD's surrogate (softmax; Gram matrices when it has gramAsync). */
  surrogate?: AsyncProbabilityModel;
  /** The misinformation model of adaptive misinformation. */
  misinformation?: AsyncProbabilityModel;
}

/** Options of one context computation. */
export interface ContextCallOptions {
  /** Cancels the work: rows still waiting for a forward pass leave the queue, and the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface BatchedContextProvider extends ContextProviderHooks {
  /** Always asynchronous: the context once every forward pass it needs has run. */
  (needs: readonly ContextNeed[], inputs: InputRows, options?: ContextCallOptions): Promise<DefenseContext>;
  readonly maxRowsPerRequest: number;
  readonly batching: ResolvedBatching;
  admit(rows: number): void;
  /** Every model's next forward pass waits (briefly) until `until` settles, when passes block this thread: see Batcher.hold. */
  hold(until: Promise<unknown>): void;
  useMetrics(metrics: ServingMetrics): void;
  /** Rejects waiting requests (503) and clears every timer; resolves once the forward pass in flight is done. */
  close(): Promise<void>;
}

/** Forwards each batcher event to every observer attached (one per middleware or proxy built with the provider). */
function fanOut(observers: BatcherObserver[]): BatcherObserver {
  return {
    batch: (rows) => observers.forEach((o) => o.batch?.(rows)),
    queueWait: (seconds) => observers.forEach((o) => o.queueWait?.(seconds)),
    queued: (rows) => observers.forEach((o) => o.queued?.(rows)),
  };
}

function widthOf(model: AsyncProbabilityModel, name: string): number {
  if (!model || typeof model.probsAsync !== 'function' || !Array.isArray(model.inputShape)) {
    throw new ServingOptionError(`${name} must have probsAsync(inputs, rows), classes and inputShape; wrap a Surrogate with asyncSurrogate(surrogate)`);
  }
  const width = model.inputShape.reduce((a, b) => a * b, 1);
  if (!Number.isInteger(width) || width < 1 || !Number.isInteger(model.classes) || model.classes < 2) {
    throw new ServingOptionError(`${name}: inputShape [${model.inputShape.join(', ')}] and classes ${model.classes} do not describe a classifier`);
  }
  return width;
}

type Forward = (inputs: Float32Array, rows: number) => Promise<Float32Array | Float64Array>;

/** One model's batcher, its input width, and the observers its events go to. */
interface ModelBatcher {
  batcher: Batcher<Float32Array | Float64Array>;
  width: number;
  observers: BatcherObserver[];
}

type ModelBatchers = Map<BatchedModel, ModelBatcher>;

/** The forward pass of a model's softmax, checked to answer one row of its classes per input row. */
const probsOf =
  (model: AsyncProbabilityModel): Forward =>
  async (inputs, rows) => {
    const probs = await model.probsAsync(inputs, rows);
    if (probs.rows !== rows || probs.cols !== model.classes || probs.data.length !== rows * model.classes)
      throw new Error(`the model answered ${probs.rows}×${probs.cols} probabilities for ${rows} rows of ${model.classes} classes`);
    return probs.data;
  };

/** A batcher per forward pass the models offer: the surrogate's softmax and Gram matrices (when it has them), the misinformation model's softmax. */
function modelBatchers({ surrogate, misinformation }: BatchedContextModels, batching: ResolvedBatching): ModelBatchers {
  const batchers: ModelBatchers = new Map();
  const add = (name: BatchedModel, model: AsyncProbabilityModel, forward: Forward): void => {
    const width = widthOf(model, name === 'misinformation' ? 'misinformation' : 'surrogate');
    const observers: BatcherObserver[] = [];
    const what = name === 'misinformation' ? 'the misinformation model' : 'the surrogate';
    batchers.set(name, { batcher: createBatcher(forward, { ...batching, width, what, observer: fanOut(observers) }), width, observers });
  };
  if (surrogate) {
    add('surrogate', surrogate, probsOf(surrogate));
    if (surrogate.differentiable !== false && typeof surrogate.gramAsync === 'function')
      add('surrogate_gram', surrogate, (inputs, rows) => surrogate.gramAsync!(inputs, rows));
  }
  if (misinformation) add('misinformation', misinformation, probsOf(misinformation));
  return batchers;
}

/** Submits the inputs to the named model's batcher; rejects when the model was not configured (`missing`) or takes another width. */
function run(
  batchers: ModelBatchers,
  name: BatchedModel,
  inputs: InputRows,
  missing: string,
  signal: AbortSignal | undefined,
): Promise<Float32Array | Float64Array> {
  const entry = batchers.get(name);
  if (!entry) return Promise.reject(new ServingError(missing, 500, 'defense_failed'));
  const { batcher, width } = entry;
  if (inputs.cols !== width)
    return Promise.reject(
      new RequestFormatError(
        `request: ${inputs.cols} input values per row; the ${name === 'misinformation' ? 'misinformation model' : 'surrogate'} takes ${width}`,
      ),
    );
  return batcher.submit(inputs.data, inputs.rows, signal);
}

/** Refuses a request over the row limit (413) or with a value that is not finite (400), before any work. */
function checkInputs(inputs: InputRows, maxRowsPerRequest: number): void {
  if (inputs.rows > maxRowsPerRequest)
    throw new RequestFormatError(`request: ${inputs.rows} input rows; at most ${maxRowsPerRequest} per request are accepted, split the batch`, 413);
  for (let i = 0; i < inputs.data.length; i++) {
    if (!Number.isFinite(inputs.data[i]))
      throw new RequestFormatError(`request: input row ${Math.floor(i / Math.max(1, inputs.cols))} holds a non-finite value`);
  }
}

type MutableContext = { -readonly [K in keyof DefenseContext]: DefenseContext[K] };

/** Starts the work of each need into `context`: the forward passes it needs (pending), or the input keys at once. */
function startNeeds(
  needs: readonly ContextNeed[],
  inputs: InputRows,
  signal: AbortSignal | undefined,
  models: BatchedContextModels,
  batchers: ModelBatchers,
  context: MutableContext,
): Promise<void>[] {
  const { surrogate, misinformation } = models;
  const pending: Promise<void>[] = [];
  for (const need of new Set(needs)) {
    if (need === 'surrogate') {
      pending.push(
        run(batchers, 'surrogate', inputs, 'the defense needs the surrogate’s probabilities, but no surrogate was configured', signal).then(
          (data) => void (context.surrogateProbs = { rows: inputs.rows, cols: surrogate!.classes, data: data as Float32Array }),
        ),
      );
    } else if (need === 'surrogateGram') {
      const missing = surrogate ? nonDifferentiableMessage() : 'the defense needs the surrogate’s Gram matrices, but no surrogate was configured';
      pending.push(
        run(batchers, 'surrogate_gram', inputs, missing, signal).then(
          (data) => void (context.gram = data instanceof Float64Array ? data : Float64Array.from(data)),
        ),
      );
    } else if (need === 'misinformation') {
      pending.push(
        run(batchers, 'misinformation', inputs, 'the defense needs a misinformation model, but none was configured', signal).then(
          (data) => void (context.misinformationProbs = { rows: inputs.rows, cols: misinformation!.classes, data: data as Float32Array }),
        ),
      );
    } else if (need === 'inputKey') {
      context.inputKeys = inputKeys(inputs.data, inputs.rows);
    } else {
      throw new ServingError(`unknown context need "${String(need)}"`, 500, 'defense_failed');
    }
  }
  return pending;
}

export function batchedSurrogateContext(models: BatchedContextModels, options: BatchingOptions = {}): BatchedContextProvider {
  const batching = resolveBatching(options);
  const batchers = modelBatchers(models, batching);
  const attached = new WeakSet<object>();
  const { surrogate, misinformation } = models;

  const provider = async (needs: readonly ContextNeed[], inputs: InputRows, options: ContextCallOptions = {}): Promise<DefenseContext> => {
    const { signal } = options;
    signal?.throwIfAborted();
    checkInputs(inputs, batching.maxRowsPerRequest);
    const context: MutableContext = {};
    const pending = startNeeds(needs, inputs, signal, models, batchers, context);
    // Every pass settles before the answer: a failed one fails the request, never a partial context.
    const settled = await Promise.allSettled(pending);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    return context;
  };

  // The middleware refuses jacobian=full over a forward-only surrogate when it is built (see options.ts).
  if (surrogate && !batchers.has('surrogate_gram')) markLacksGram(provider, nonDifferentiableMessage());
  return Object.assign(provider, {
    maxRowsPerRequest: batching.maxRowsPerRequest,
    batching,
    admit(rows: number): void {
      for (const { batcher } of batchers.values()) batcher.admit(rows);
    },
    hold(until: Promise<unknown>): void {
      for (const { batcher } of batchers.values()) batcher.hold(until);
    },
    useMetrics(metrics: ServingMetrics): void {
      // Several middlewares on one registry count each forward pass once.
      if (attached.has(metrics.registry)) return;
      attached.add(metrics.registry);
      const observe = batchingObservers(metrics, batching.maxBatchRows);
      for (const [name, { observers }] of batchers) observers.push(observe(name));
    },
    failure: (): Error | undefined => surrogate?.failure?.() ?? misinformation?.failure?.(),
    close: async (): Promise<void> => {
      await Promise.all([...batchers.values()].map(({ batcher }) => batcher.close()));
    },
  });
}

/** A provider that sees transformed inputs (e.g. pixels scaled to [0, 1]), keeping the original's limits, metrics hooks and cancellation. */
export function mapContextInputs(provider: ContextProvider, map: (inputs: InputRows) => InputRows): ContextProvider {
  const call = provider as (needs: readonly ContextNeed[], inputs: InputRows, options?: ContextCallOptions) => ReturnType<ContextProvider>;
  const mapped: ContextProvider = (needs, inputs, ...rest: [ContextCallOptions?]) => call(needs, map(inputs), ...rest);
  return Object.assign(mapped, {
    maxRowsPerRequest: provider.maxRowsPerRequest,
    admit: provider.admit?.bind(provider),
    hold: (provider as { hold?: BatchedContextProvider['hold'] }).hold?.bind(provider),
    useMetrics: provider.useMetrics?.bind(provider),
    failure: provider.failure?.bind(provider),
    close: provider.close?.bind(provider),
  });
}
