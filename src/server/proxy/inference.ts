/**
 * The inference route: the request read whole and checked (its JSON, the inputs the defense or a
 * detector needs), forwarded as parsed, the model's answer read whole, observed by the client gate,
 * defended and sent. Every failure ends in an error body, never in the model's original answer.
 * An upstream error answer is never forwarded as it came: the client gets the codec's error body with
 * the upstream's message, its fractional numbers masked (see upstreamErrorMessage); a redirect is a 502.
 * Only an allowlist of the upstream's headers reaches the client.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Defense } from '../../defenses/index.js';
import type { ContextPrefetcher } from '../batching/prefetch.js';
import type { ClientGate, ClientTicket } from '../clients/gate.js';
import { RequestFormatError, ServingError } from '../errors.js';
import { admitRows, type Outcome, type Perturber } from '../perturber.js';
import type { InputRows } from '../protocols/index.js';
import { tierOf } from '../shadow/index.js';
import { requestBodyError, type ProxyAnswers } from './answer.js';
import {
  BodyTooLargeError,
  decodeBody,
  forwardableHeaders,
  isIdentityEncoding,
  parseAnswerJson,
  parseRequestJson,
  readBody,
  serialiseRequest,
} from './bodies.js';
import type { ResolvedProxyOptions } from './options.js';
import { requestHeaders, type Upstream } from './upstream.js';

/**
 * The upstream's headers a client gets with an answer. An allowlist: any other may describe the
 * original body (its digest, length, ETag) or carry what the model server chose to put there (a
 * debug header with the scores). The proxy sets its own content-type and content-length.
 */
const ANSWER_HEADERS_KEPT: readonly string[] = ['cache-control', 'vary', 'content-language', 'x-request-id', 'traceparent', 'tracestate'];

/** With an error answer, also when to try again, how to authenticate, which methods are allowed. */
const ERROR_HEADERS_KEPT: readonly string[] = [...ANSWER_HEADERS_KEPT, 'retry-after', 'www-authenticate', 'allow'];

/**
 * Numbers that may be a probability or a logit, masked in an upstream's error message: with a
 * decimal point or an exponent (NumPy's `7.e-01` too), and percentages; integers (a shape) stay.
 */
const FRACTIONAL_NUMBER = /-?(?:\d*\.\d+(?:e[-+]?\d+)?|\d+\.(?:e[-+]?\d+)?|\d+e[-+]?\d+)|\d+\s*%/gi;

/** The longest upstream error message passed on, characters. */
const ERROR_MESSAGE_CHARS = 300;

/** How much of an upstream error text is read for its message: enough that what is cut off never reaches the client. */
const ERROR_TEXT_READ = 4096;

/** Upstream 5xx statuses that say the same from the proxy (an upstream fault, unavailable, too slow); any other 5xx is answered 502. */
const UPSTREAM_FAULTS_KEPT = new Set([502, 503, 504]);

export interface InferenceDeps {
  options: ResolvedProxyOptions;
  perturber: Perturber;
  upstream: Upstream;
  answers: ProxyAnswers;
  /** Starts the defense's context while the upstream computes (see batching/prefetch.ts). */
  prefetcher?: ContextPrefetcher;
}

/** Answers one admitted inference request; `defense` null: skipped for this request. */
export type InferenceRoute = (
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  defense: Defense | null,
  label: string,
  ticket?: ClientTicket,
) => Promise<void>;

/** A request that passed every check, and what the defense and the detectors read of it. */
interface CheckedRequest {
  /** What goes to the model: the request as parsed here, serialised again (see serialiseRequest). */
  forwarded: Buffer;
  body: unknown;
  /** Read before forwarding: only this compact Float32Array (not the JSON tree) waits for the answer. */
  inputs?: InputRows;
  /** Why the inputs could not be read, where only an escalation tier would use them: that tier's refusal. */
  inputsError?: unknown;
}

/** The model's answer, read whole. */
interface ModelAnswer {
  status: number;
  /** Its headers, those of ERROR_HEADERS_KEPT only. */
  headers: OutgoingHttpHeaders;
  text: string;
}

/** The route's dependencies, with what is derived from them once. */
interface Route extends InferenceDeps {
  /** An escalation tier may need the inputs (a surrogate) where the default defense does not. */
  tiersNeedInputs: boolean;
}

/** The request's JSON: read within maxBodyBytes, decoded, parsed. */
async function readRequestJson(req: IncomingMessage, maxBodyBytes: number): Promise<unknown> {
  // A body cut short (closed or reset) is a BodyAbortedError: the client's doing, never the defense's.
  const raw = await readBody(req, maxBodyBytes);
  // Most requests are not compressed: those skip the asynchronous decoder (a promise per request).
  const decoded = isIdentityEncoding(req.headers['content-encoding'])
    ? raw
    : await decodeBody(raw, req.headers['content-encoding'], maxBodyBytes).catch((error: Error) => {
        throw error.message.includes('maxOutputLength') || (error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE'
          ? new BodyTooLargeError(`the decoded body is over the limit of ${maxBodyBytes} bytes`)
          : new RequestFormatError(`the request body could not be decoded (${error.message})`);
      });
  if (!decoded) throw new RequestFormatError(`unsupported request content-encoding "${req.headers['content-encoding']}"; send gzip, deflate, br or none`, 415);
  return parseRequestJson(decoded.toString('utf8'));
}

/**
 * The inputs a defense needs are read now: a request without them is refused before the upstream
 * works on it. None when neither the defense nor the client gate needs them; where only an escalation
 * tier would use them, those that cannot be read give the error to answer with if the client is escalated.
 */
async function readInputs(
  route: Route,
  body: unknown,
  defense: Defense | null,
  ticket: ClientTicket | undefined,
): Promise<Pick<CheckedRequest, 'inputs' | 'inputsError'>> {
  const { serving } = route.options;
  const gate = serving.clients;
  if (defense && defense.needs.length > 0) {
    // Numeric tensors come back synchronously; images are decoded (off the event loop) before anything is forwarded,
    // once their count has passed the row limit and the surrogate's queue (413, 503 before any decoding).
    const read = serving.readInputs(body, (rows) => admitRows(serving.context, rows));
    const inputs = read instanceof Promise ? await read : read;
    // Refused before the upstream spends any work on it: too many rows (413), or the surrogate's queue is full (503).
    admitRows(serving.context, inputs.rows);
    return { inputs };
  }
  if (!ticket || !(gate!.observeInputs || route.tiersNeedInputs)) return {};
  try {
    const read = serving.readInputs(body);
    return { inputs: read instanceof Promise ? await read : read };
  } catch (error) {
    // A detector that needs the inputs would be blind to this request: refused (400), never observed as if seen.
    if (gate!.requiresInputs) throw gate!.unreadableInputs(error);
    // Otherwise (only an escalation tier would use them) the detectors see the probabilities only, and the
    // request is refused with the reader's error (400 for inputs it cannot read) only if its client is
    // escalated to such a tier: a defense failing on absent inputs would answer 500.
    return { inputsError: error };
  }
}

async function checkRequest(route: Route, req: IncomingMessage, defense: Defense | null, ticket: ClientTicket | undefined): Promise<CheckedRequest> {
  const body = await readRequestJson(req, route.options.maxBodyBytes);
  const read = await readInputs(route, body, defense, ticket);
  // Last, once the request passed every check: the model gets what was parsed and read above.
  return { forwarded: serialiseRequest(body), body, ...read };
}

/** Forwards the checked request and reads the model's whole answer, within one deadline. */
async function exchange(
  route: Route,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  checked: CheckedRequest,
  defense: Defense | null,
): Promise<ModelAnswer> {
  const { upstream, prefetcher } = route;
  const timer = upstream.startTimer();
  try {
    // The answer is decoded here anyway, so the upstream is not invited to compress it. The body is
    // JSON of our own: not encoded, and not in KServe's binary extension (whose JSON header length
    // would no longer hold).
    const headers = requestHeaders(req, ['accept-encoding', 'content-encoding', 'content-type', 'inference-header-content-length']);
    headers['content-type'] = 'application/json';
    const asked = upstream.call(req, res, path, headers, checked.forwarded, timer, true);
    // The context depends on the inputs only: computed meanwhile (a small request's rows queue now, not after
    // its upstream round trip). Work the answer does not use is cancelled once the exchange ends, however it ends.
    if (prefetcher && checked.inputs && defense && defense.needs.length > 0) res.once('close', prefetcher.start(defense.needs, checked.inputs));
    const answer = await asked;
    const text = await upstream.readAnswer(answer, timer);
    return { status: answer.statusCode ?? 502, headers: keptHeaders(answer.headers, ERROR_HEADERS_KEPT), text };
  } finally {
    timer.clear();
  }
}

/** Those of `names` among the upstream's headers (not hop-by-hop, nor named by its Connection header). */
function keptHeaders(headers: IncomingHttpHeaders, names: readonly string[]): OutgoingHttpHeaders {
  const forwardable = forwardableHeaders(headers);
  const out: OutgoingHttpHeaders = {};
  for (const name of names) if (forwardable[name] !== undefined) out[name] = forwardable[name];
  return out;
}

/**
 * The message of an upstream error answer as the client reads it: its JSON "error", "message" or
 * "detail" string, else its text; every fractional number masked and the whole cut short. A model
 * server may quote its outputs in an error ("postprocess failed on array([0.71, ...])"): the client
 * still reads "input shape [1, 784] expected", never a probability.
 */
function upstreamErrorMessage(status: number, text: string, parsed: unknown): string {
  let message = text;
  if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
    const fields = parsed as Record<string, unknown>;
    const found = ['error', 'message', 'detail'].map((key) => fields[key]).find((value) => typeof value === 'string');
    if (found !== undefined) message = found as string;
  }
  // Read no further than ERROR_TEXT_READ, and not into a number it would cut (whose integer part would then pass).
  const head = message.length > ERROR_TEXT_READ ? message.slice(0, ERROR_TEXT_READ).replace(/[\d.eE+-]+$/, '') : message;
  const masked = head.replace(FRACTIONAL_NUMBER, '…').replace(/\s+/g, ' ').trim();
  if (masked.length === 0) return `the model server answered ${status}`;
  return masked.length > ERROR_MESSAGE_CHARS ? `${masked.slice(0, ERROR_MESSAGE_CHARS)}…` : masked;
}

/**
 * An upstream answer with status >= 300, never forwarded as it came. A redirect is an upstream fault
 * (502). An error is withheld (502) if the codec reads probabilities in it; otherwise answered with the
 * codec's error body and the upstream's message (upstreamErrorMessage): a 4xx with its status (the
 * client's mistake), a 502, 503 or 504 with its own, any other 5xx as 502.
 */
function answerUpstreamError(route: Route, res: ServerResponse, label: string, answer: ModelAnswer): void {
  const { status, text } = answer;
  if (status < 400) {
    route.answers.fail(res, label, new ServingError(`the model server answered a redirect (${status}), which the proxy does not follow`, 502, 'bad_answer'));
    return;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON (an error page): no codec reads probabilities in it, and its text is the message.
    parsed = undefined;
  }
  const screened = route.perturber.screenErrorAnswer(label, status, parsed);
  if (screened.record.outcome !== 'passed_error') {
    route.answers.send(res, screened);
    return;
  }
  const body = route.options.serving.codec.errorBody(upstreamErrorMessage(status, text, parsed));
  const sent = status < 500 || UPSTREAM_FAULTS_KEPT.has(status) ? status : 502;
  route.answers.send(res, { ...screened, status: sent, body }, answer.headers);
}

/** A drawn request goes to the shadow once its answer has been sent (the response's 'finish'), never before. */
function toShadow(
  serving: ResolvedProxyOptions['serving'],
  res: ServerResponse,
  answered: NonNullable<Outcome['answered']>,
  inputs: InputRows | (() => InputRows | Promise<InputRows>),
): void {
  const { shadow } = serving;
  if (!shadow?.draw()) return;
  const tier = tierOf(answered.defense, serving.defense, serving.tiers);
  if (tier !== undefined) res.once('finish', () => shadow.offer({ tier, original: answered.original, defended: answered.defended, inputs }));
}

/** The model's answer, observed by the client gate (with a ticket) and defended; a refusal's headers come with its outcome. */
async function defend(
  route: Route,
  res: ServerResponse,
  label: string,
  answer: ModelAnswer,
  defense: Defense | null,
  checked: CheckedRequest,
  ticket: ClientTicket | undefined,
): Promise<void> {
  const { perturber, answers } = route;
  const { serving } = route.options;
  if (answer.status < 300 && answer.text.length === 0) {
    answers.fail(res, label, new ServingError('model answer: empty', 502, 'bad_answer'));
    return;
  }
  if (answer.status >= 300) {
    answerUpstreamError(route, res, label, answer);
    return;
  }
  let parsed: unknown;
  try {
    parsed = parseAnswerJson(answer.text);
  } catch (error) {
    answers.fail(res, label, error);
    return;
  }
  const { inputs } = checked;
  const gate = serving.clients;
  const observer = ticket
    ? (probs: Parameters<ClientGate['observe']>[1]) => gate!.observe(ticket, probs, gate!.observeInputs ? inputs : undefined, defense)
    : undefined;
  const inputsOf = (): InputRows | Promise<InputRows> => {
    // Refused as the gate refuses unreadable inputs (400 whatever the reader threw, counted and logged).
    if (checked.inputsError !== undefined) throw gate ? gate.unreadableInputs(checked.inputsError) : checked.inputsError;
    return inputs ?? serving.readInputs(checked.body);
  };
  const outcome = await perturber.perturb(defense, inputsOf, parsed, observer);
  if (outcome.answered) toShadow(serving, res, outcome.answered, inputs ?? (() => serving.readInputs(checked.body)));
  // Retry-After belongs to error answers; any the outcome needs it sets itself.
  const { 'retry-after': _retryAfter, ...headers } = answer.headers;
  answers.send(res, outcome, headers);
}

export function createInferenceRoute(deps: InferenceDeps): InferenceRoute {
  const route: Route = { ...deps, tiersNeedInputs: [...deps.options.serving.tiers.values()].some((tier) => tier.needs.length > 0) };
  return async (req, res, path, defense, label, ticket) => {
    let checked: CheckedRequest;
    try {
      checked = await checkRequest(route, req, defense, ticket);
    } catch (error) {
      route.answers.fail(res, label, requestBodyError(error));
      return;
    }
    let answer: ModelAnswer;
    try {
      answer = await exchange(route, req, res, path, checked, defense);
    } catch (error) {
      route.answers.fail(res, label, error);
      return;
    }
    await defend(route, res, label, answer, defense, checked, ticket);
  };
}
