/**
 * The path of one answer, shared by the middleware and the proxy:
 * codec.readAnswer → (context from the request's inputs) → defense.apply → view.write,
 * with metrics and a log record on the side. Fails closed: whatever throws, the result is an
 * error body or (onFailure "argmax") the top-1 label only, never the model's original numbers.
 */
import { performance } from 'node:perf_hooks';
import {
  argmaxRows,
  DefenseError,
  InvalidBatchError,
  toProbabilities,
  utilityCost,
  type ContextNeed,
  type Defense,
  type DefenseContext,
  type InputFormat,
  type ProbBatch,
} from '../defenses/index.js';
import { AnswerFormatError, RequestFormatError, ServingError } from './errors.js';
import type { DefenseRecord } from './logger.js';
import type { RequestOutcome, ServingMetrics } from './metrics.js';
import type { AnswerView, Codec, InputRows } from './protocols/index.js';

/** Computes what a defense needs (surrogate probabilities, Gram matrices, input keys) from the request's inputs. */
export type ContextProvider = ((needs: readonly ContextNeed[], inputs: InputRows) => DefenseContext | Promise<DefenseContext>) & ContextProviderHooks;

/** Optional members a provider may carry (the batched surrogate context does); plain functions have none. */
export interface ContextProviderHooks {
  /** Rows one request may carry: more is refused with 413 before any work (the proxy checks before forwarding). */
  readonly maxRowsPerRequest?: number;
  /** Throws OverloadedError (503) when `rows` more rows cannot be queued now: the proxy asks before forwarding. */
  admit?(rows: number): void;
  /** Called by each middleware or proxy built with this provider, to register its metrics on their registry. */
  useMetrics?(metrics: ServingMetrics): void;
  /** Why the provider's models can no longer answer (a surrogate's worker thread died); undefined while they can. */
  failure?(): Error | undefined;
  /** Stops the provider's timers and refuses waiting work; the owner calls it on shutdown. */
  close?(): Promise<void>;
}

/** A request with more rows than the context provider accepts: 413, before any work. */
export function checkRowLimit(context: ContextProvider | undefined, rows: number): void {
  const limit = context?.maxRowsPerRequest;
  if (limit !== undefined && rows > limit)
    throw new RequestFormatError(`request: ${rows} input rows; at most ${limit} per request are accepted, split the batch`, 413);
}

/** Before the upstream works on a request: 413 over the row limit, 503 (Retry-After) when the provider's queue is full. */
export function admitRows(context: ContextProvider | undefined, rows: number): void {
  checkRowLimit(context, rows);
  context?.admit?.(rows);
}

/** Client-side failures and overload answer as such, never with the argmax fallback: the client must resend. */
function isRefusal(error: unknown): boolean {
  return error instanceof ServingError && (error.outcome === 'bad_request' || error.outcome === 'too_large' || error.outcome === 'overloaded');
}

/**
 * A context value that is not finite: the request's inputs (finite, but extreme) drove the surrogate
 * or the misinformation model out of range. The client's request (400), never a failure that falls
 * back to the top-1 label, which a client could otherwise trigger at will to read the true label.
 */
function nonFiniteContext(context: DefenseContext): RequestFormatError | undefined {
  const parts: [string, ArrayLike<number> | undefined][] = [
    ['the surrogate', context.surrogateProbs?.data],
    ['the surrogate', context.gram],
    ['the misinformation model', context.misinformationProbs?.data],
  ];
  for (const [what, data] of parts) {
    if (!data) continue;
    for (let i = 0; i < data.length; i++)
      if (!Number.isFinite(data[i]))
        return new RequestFormatError(`request: the inputs drive ${what} out of range (a value that is not finite); send inputs in the model's range`);
  }
  return undefined;
}

export type FailureMode = 'error' | 'argmax';

export interface PerturberConfig {
  codec: Codec;
  metrics: ServingMetrics;
  onFailure: FailureMode;
  /** What the model answers; used to measure the perturbation in probability space. */
  inputFormat: InputFormat;
  context?: ContextProvider;
  /** Status for an answer the codec or the defense cannot read: 502 behind a proxy, 500 in a mounted route. */
  answerErrorStatus: number;
}

export interface Outcome {
  status: number;
  body: unknown;
  record: DefenseRecord;
  /** Headers of an error answer, e.g. Retry-After on a 503. */
  headers?: Readonly<Record<string, string>>;
  /** A defended (or undefended) answer: the defense, the model's probabilities and the ones sent (for the shadow attacker; never logged). */
  answered?: AnsweredRows;
}

/** Both sides of one answer, known where the defense ran. */
export interface AnsweredRows {
  readonly defense: Defense;
  /** The model's answer as probabilities (logits turned into probabilities). */
  readonly original: ProbBatch;
  readonly defended: ProbBatch;
}

export const SKIPPED_LABEL = 'none';

/**
 * Called with the model's original probabilities once the answer is read, before the defense runs
 * (client detection observes them there); resolves with a defense replacing the chosen one, or
 * undefined to keep it. A rejection withholds the answer (its ServingError status, else 500).
 */
export type AnswerObserver = (probs: ProbBatch) => Promise<Defense | undefined>;

export interface Perturber {
  /**
   * Defends one answer; `defense` null means the caller chose to skip the defense for this request.
   * `readInputs` gives the request's model inputs (called only when the defense needs context);
   * a promise when images are decoded.
   */
  perturb(
    defense: Defense | null,
    readInputs: () => InputRows | Promise<InputRows>,
    answerBody: unknown,
    observer?: AnswerObserver,
  ): Outcome | Promise<Outcome>;
  /** An error answer (status >= 400) passes unchanged unless it holds probabilities the codec can read. */
  screenErrorAnswer(label: string, status: number, answerBody: unknown): Outcome;
  /** The error outcome for a failure outside the defense (bad request, upstream fault), counted under `label`. */
  failure(label: string, error: unknown): Outcome;
}

function oneHot(batch: ProbBatch): ProbBatch {
  const top = argmaxRows(batch);
  const data = new Float32Array(batch.rows * batch.cols);
  for (let r = 0; r < batch.rows; r++) data[r * batch.cols + top[r]] = 1;
  return { rows: batch.rows, cols: batch.cols, data };
}

/**
 * The error's message for the log. Defense-layer messages may quote an entry of the answer
 * ("entry 2 is negative (-0.31)", or a whole logit "(-3)"), so every number but a row's or an
 * entry's index is masked: logs carry no probabilities.
 */
function logDetail(error: unknown): string {
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  if (!(error instanceof DefenseError)) return message;
  return message.replace(/(\b(?:rows?|entry|entries|column|class) )?-?(?:\d*\.\d+|\d+\.?)(?:e[-+]?\d+)?/gi, (found, index: string | undefined) =>
    index ? found : '…',
  );
}

/** Maps an error to a client status and message that repeat none of the answer's numbers. */
function classify(
  error: unknown,
  answerErrorStatus: number,
): { status: number; outcome: RequestOutcome; message: string; headers?: Readonly<Record<string, string>> } {
  if (error instanceof AnswerFormatError) return { status: answerErrorStatus, outcome: 'bad_answer', message: error.message };
  if (error instanceof ServingError) return { status: error.status, outcome: error.outcome, message: error.message, headers: error.headers };
  // Defense-layer messages may quote an entry of the answer, so the client gets a generic one.
  if (error instanceof InvalidBatchError)
    return { status: answerErrorStatus, outcome: 'bad_answer', message: 'model answer: not a valid batch of probability rows for the defense' };
  return { status: 500, outcome: 'defense_failed', message: 'the defense failed, so the answer was withheld' };
}

/** The error answer for a failure (its headers, e.g. Retry-After, included), counted under `label`. */
function failureOutcome(config: PerturberConfig, label: string, error: unknown): Outcome {
  const { status, outcome, message, headers } = classify(error, config.answerErrorStatus);
  config.metrics.requests.inc({ defense: label, outcome });
  const detail = logDetail(error);
  return { status, body: config.codec.errorBody(message), record: { defense: label, outcome, rows: 0, error: detail }, ...(headers ? { headers } : {}) };
}

/** Whether the codec reads an answer (probabilities) in `body`. */
function readsAsAnswer(codec: Codec, body: unknown): boolean {
  try {
    codec.readAnswer(body);
    return true;
  } catch {
    // Unreadable as an answer: an ordinary error body, safe to pass.
    return false;
  }
}

/** A defended answer's metrics and log record: the perturbation per row, top-1 changes, the defense's time. */
function measureAnswer(
  config: PerturberConfig,
  label: string,
  defense: Defense,
  batch: ProbBatch,
  defended: ProbBatch,
  started: number,
): Pick<Outcome, 'record' | 'answered'> {
  const { metrics } = config;
  const seconds = (performance.now() - started) / 1000;
  const rows = batch.rows;
  let sumL1 = 0;
  let changed = 0;
  let original: ProbBatch | undefined;
  try {
    // Probability answers are measured as they came (the defense accepted them within 1e-3 of the simplex).
    original = config.inputFormat === 'probs' ? batch : toProbabilities(batch, config.inputFormat);
    const cost = utilityCost(original, defended);
    for (let r = 0; r < rows; r++) {
      metrics.l1.observe({ defense: label }, cost.l1[r]);
      sumL1 += cost.l1[r];
      changed += cost.top1Changed[r];
    }
  } catch {
    // The defense accepted the rows, so measuring them cannot fail; if it does, the answer still goes out.
  }
  // `none` (alone or repeated) returns the model's answer: counted as what it is.
  const outcome = defense.name.split('|').every((stage) => stage === 'none') ? 'undefended' : 'defended';
  metrics.requests.inc({ defense: label, outcome });
  metrics.rows.inc({ defense: label }, rows);
  if (changed) metrics.top1Changes.inc({ defense: label }, changed);
  metrics.latency.observe({ defense: label }, seconds);
  const answered = original ? { answered: { defense, original, defended } } : {};
  return { record: { defense: label, outcome, rows, meanL1: sumL1 / rows, top1Changed: changed, defenseMs: seconds * 1000 }, ...answered };
}

export function createPerturber(config: PerturberConfig): Perturber {
  const { codec, metrics } = config;

  const count = (label: string, outcome: RequestOutcome): void => metrics.requests.inc({ defense: label, outcome });

  const failure = (label: string, error: unknown): Outcome => failureOutcome(config, label, error);

  /** After the rows were read, a failure may still answer with the label only, if so configured. */
  const failAfterRead = (label: string, view: AnswerView, error: unknown): Outcome => {
    if (config.onFailure !== 'argmax' || isRefusal(error)) return failure(label, error);
    try {
      const body = view.write(oneHot(view.batch));
      count(label, 'fallback_argmax');
      const detail = logDetail(error);
      return { status: 200, body, record: { defense: label, outcome: 'fallback_argmax', rows: view.batch.rows, error: detail } };
    } catch (writeError) {
      return failure(label, writeError);
    }
  };

  const finish = (label: string, defense: Defense, view: AnswerView, context: DefenseContext, started: number): Outcome => {
    let defended: ProbBatch;
    let body: unknown;
    try {
      defended = defense.apply(view.batch, context);
      body = view.write(defended);
    } catch (error) {
      return failAfterRead(label, view, error);
    }
    return { status: 200, body, ...measureAnswer(config, label, defense, view.batch, defended, started) };
  };

  /** A failure to read the request's inputs: a request the client got wrong is answered as such, even with the argmax fallback. */
  const failInputs = (label: string, view: AnswerView, error: unknown): Outcome =>
    isRefusal(error) ? failure(label, error) : failAfterRead(label, view, error);

  const withContext = (label: string, defense: Defense, view: AnswerView, inputs: InputRows, started: number): Outcome | Promise<Outcome> => {
    try {
      checkRowLimit(config.context, inputs.rows);
    } catch (error) {
      return failure(label, error);
    }
    if (inputs.rows !== view.batch.rows)
      return failAfterRead(label, view, new AnswerFormatError(`model answer: ${view.batch.rows} rows for ${inputs.rows} input rows`));
    return Promise.resolve()
      .then(() => config.context!(defense.needs, inputs))
      .then(
        (context) => {
          const outOfRange = nonFiniteContext(context);
          return outOfRange ? failure(label, outOfRange) : finish(label, defense, view, context, started);
        },
        (error: unknown) => failAfterRead(label, view, error),
      );
  };

  const defendAnswer = (
    defense: Defense | null,
    readInputs: () => InputRows | Promise<InputRows>,
    answerBody: unknown,
    known?: AnswerView,
  ): Outcome | Promise<Outcome> => {
    if (!defense) {
      count(SKIPPED_LABEL, 'undefended');
      return { status: 200, body: answerBody, record: { defense: SKIPPED_LABEL, outcome: 'undefended', rows: 0 } };
    }
    const label = defense.spec;
    let view: AnswerView;
    try {
      view = known ?? codec.readAnswer(answerBody);
    } catch (error) {
      return failure(label, error);
    }
    const started = performance.now();
    if (defense.needs.length === 0) return finish(label, defense, view, {}, started);
    let inputs: InputRows | Promise<InputRows>;
    try {
      if (!config.context)
        throw new DefenseError(`defense ${defense.spec} needs ${defense.needs.join(', ')} but no context provider (surrogate) was configured`);
      inputs = readInputs();
    } catch (error) {
      return failInputs(label, view, error);
    }
    if (inputs instanceof Promise) {
      return inputs.then(
        (read) => withContext(label, defense, view, read, started),
        (error: unknown) => failInputs(label, view, error),
      );
    }
    return withContext(label, defense, view, inputs, started);
  };

  const perturb = (
    defense: Defense | null,
    readInputs: () => InputRows | Promise<InputRows>,
    answerBody: unknown,
    observer?: AnswerObserver,
  ): Outcome | Promise<Outcome> => {
    if (!observer) return defendAnswer(defense, readInputs, answerBody);
    const label = defense ? defense.spec : SKIPPED_LABEL;
    let view: AnswerView;
    let probs: ProbBatch;
    try {
      view = codec.readAnswer(answerBody);
      probs = config.inputFormat === 'probs' ? view.batch : toProbabilities(view.batch, config.inputFormat);
    } catch (error) {
      return failure(label, error);
    }
    return observer(probs).then(
      (replacement) => defendAnswer(replacement ?? defense, readInputs, answerBody, view),
      (error: unknown) => failure(label, error),
    );
  };

  const screenErrorAnswer = (label: string, status: number, answerBody: unknown): Outcome => {
    if (readsAsAnswer(codec, answerBody))
      return failure(label, new AnswerFormatError(`model answer: an error status ${status} that carries probabilities was withheld`));
    count(label, 'passed_error');
    return { status, body: answerBody, record: { defense: label, outcome: 'passed_error', rows: 0 } };
  };

  return { perturb, screenErrorAnswer, failure };
}
