/**
 * Proxy mode: a standalone HTTP server in front of any model server. Inference routes are
 * forwarded, their answers defended on the way back; health and metadata routes pass through
 * untouched (their answers streamed); every other route is refused (see proxy/routes.ts).
 *
 * Framing: no client's framing reaches the model server. A request whose framing is in doubt (a body
 * on GET/HEAD/..., Content-Length with Transfer-Encoding, a Connection header naming either) is
 * refused with 400 and its connection closed, before anything is forwarded. Every forwarded body is
 * one the proxy read whole and sends with its own Content-Length: on an inference route the JSON the
 * proxy parsed, serialised again (the model sees the very input the defense and the detectors saw);
 * on a pass-through route the bytes read (within maxBodyBytes), and none for a bodyless method.
 * Pass-through exchanges use a connection of their own, closed after the answer: nothing they leave
 * on it can reach the pooled connections whose answers the proxy defends.
 *
 * Faults, each a JSON error body: upstream refused or reset → 502, slower than timeoutMs → 504,
 * an answer that is not JSON or that the codec rejects → 502, request body over maxBodyBytes → 413,
 * malformed request JSON → 400. Upstream error answers (status >= 400) pass through unchanged:
 * they carry no probabilities, and one that does (the codec can read it) is withheld with a 502.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Defense } from '../defenses/index.js';
import { RequestFormatError, ServingError, ServingOptionError } from './errors.js';
import { createHttpLogger, redactingHeaders, setDefenseRecord } from './logger.js';
import { metricsHandler, type ServingMetrics } from './metrics.js';
import { resolveServingOptions, selectDefense, SERVING_OPTION_NAMES, type ServingOptions } from './options.js';
import { admitRows, createPerturber, SKIPPED_LABEL, type Outcome } from './perturber.js';
import {
  BODYLESS_METHODS,
  BodyTooLargeError,
  decodeBody,
  forwardableHeaders,
  framingDoubt,
  isIdentityEncoding,
  parseAnswerJson,
  parseRequestJson,
  readBody,
  serialiseRequest,
} from './proxy/bodies.js';
import { createHealth } from './proxy/health.js';
import { createRouteTable, type RouteOptions } from './proxy/routes.js';
import type { InputRows } from './protocols/index.js';
import { contextPrefetcher } from './batching/prefetch.js';
import { adminHandler, DEFAULT_ADMIN_PATH } from './clients/admin.js';
import { ClientRefusal, type ClientGate, type ClientTicket } from './clients/gate.js';
import { tierOf, type ShadowAttacker } from './shadow/index.js';

export interface ProxyOptions extends ServingOptions<IncomingMessage>, RouteOptions {
  /** Base URL of the model server, e.g. "http://127.0.0.1:8080" (a path prefix is kept). */
  upstream: string;
  /** Milliseconds to wait for the upstream's whole answer (inference) or its headers (pass-through). Default 30000. */
  timeoutMs?: number;
  /** Largest request body accepted on an inference route, bytes. Default 10 MiB. */
  maxBodyBytes?: number;
  /** Largest model answer read, bytes (decoded). Default 64 MiB. */
  maxAnswerBytes?: number;
  /** Path where the proxy serves its own metrics; false to serve none. Default "/metrics". */
  metricsPath?: string | false;
  /** Where /metrics gets its text (default: this proxy's registry); a cluster worker asks the primary for all workers' metrics. */
  metricsText?: () => Promise<string>;
  /** The proxy's own liveness path (200 while it serves); false for none. Default "/healthz". */
  livePath?: string | false;
  /** The proxy's own readiness path (200 when not draining and the upstream answers); false for none. Default "/readyz". */
  readyPath?: string | false;
  /** Upstream path /readyz probes (2xx: ready). Default "/v2/health/ready" for kserve-v2; otherwise any answer below 500 to GET / counts. */
  upstreamHealthPath?: string;
}

export interface DefenseProxy {
  /** The node:http request listener. */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void;
  readonly metrics: ServingMetrics;
  readonly defense: Defense;
  /** With clients: the gate (ready(), suspicious()). */
  readonly clients?: ClientGate;
  /** With shadow: the shadow attacker (runRound(), held(), close()). */
  readonly shadow?: ShadowAttacker;
  /** Stops taking requests: new ones get 503 (and /readyz says draining) while those in flight finish. */
  drain(): void;
  /** Resolves once no request is in flight. */
  idle(): Promise<void>;
  /** Closes the keep-alive connections to the upstream (and the client store's connection). */
  close(): void;
}

const PROXY_OPTION_NAMES = [
  'upstream',
  'timeoutMs',
  'maxBodyBytes',
  'maxAnswerBytes',
  'metricsPath',
  'metricsText',
  'livePath',
  'readyPath',
  'upstreamHealthPath',
  'inferRoutes',
  'passRoutes',
  'passUnknownRoutes',
];
/** Not forwarded to the client with a rewritten answer: they describe the original body. */
const ANSWER_HEADERS_DROPPED = ['content-length', 'content-encoding', 'etag', 'content-md5', 'accept-ranges', 'content-range'];

/** Stands in for a settled exchange's error listener: a late socket error is then neither fatal nor kept. */
function ignoreLateError(): void {}

class UpstreamTimeoutError extends ServingError {
  constructor(timeoutMs: number) {
    super(`the model server did not answer within ${timeoutMs} ms`, 504, 'upstream_timeout');
  }
}

function upstreamUnavailable(error: unknown): ServingError {
  const code = (error as NodeJS.ErrnoException)?.code;
  return new ServingError(`the model server is unavailable (${code ?? (error as Error)?.message ?? 'connection failed'})`, 502, 'upstream_unavailable');
}

function positiveInteger(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0)
    throw new ServingOptionError(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return value;
}

function ownPath(value: unknown, name: string, fallback: string): string | false {
  if (value === undefined) return fallback;
  if (value === false || (typeof value === 'string' && value.startsWith('/'))) return value;
  throw new ServingOptionError(`${name} must be a path such as "${fallback}", or false`);
}

function parseUpstream(upstream: unknown): URL {
  let url: URL;
  try {
    url = new URL(String(upstream));
  } catch {
    throw new ServingOptionError(`upstream must be a URL such as "http://127.0.0.1:8080", got ${JSON.stringify(upstream)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ServingOptionError(`upstream must be an http:// or https:// URL, got ${url.protocol}`);
  if (url.search || url.hash) throw new ServingOptionError('upstream must not carry a query or a fragment; the client’s query is forwarded');
  return url;
}

export function createDefenseProxy(options: ProxyOptions): DefenseProxy {
  if (!options || typeof options !== 'object')
    throw new ServingOptionError('options are required, e.g. { upstream: "http://127.0.0.1:8080", defense: "rounding:decimals=2" }');
  const serving: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (PROXY_OPTION_NAMES.includes(key)) continue;
    if (!SERVING_OPTION_NAMES.includes(key))
      throw new ServingOptionError(`unknown option ${key}; allowed: ${[...PROXY_OPTION_NAMES, ...SERVING_OPTION_NAMES].join(', ')}`);
    serving[key] = value;
  }
  const resolved = resolveServingOptions(serving as unknown as ServingOptions<IncomingMessage>);
  const upstream = parseUpstream(options.upstream);
  const basePath = upstream.pathname.replace(/\/$/, '');
  const timeoutMs = positiveInteger(options.timeoutMs, 'timeoutMs', 30_000);
  const maxBodyBytes = positiveInteger(options.maxBodyBytes, 'maxBodyBytes', 10 * 1024 * 1024);
  const maxAnswerBytes = positiveInteger(options.maxAnswerBytes, 'maxAnswerBytes', 64 * 1024 * 1024);
  const metricsPath = options.metricsPath === undefined ? '/metrics' : options.metricsPath;
  const livePath = ownPath(options.livePath, 'livePath', '/healthz');
  const readyPath = ownPath(options.readyPath, 'readyPath', '/readyz');
  if (metricsPath !== false && (typeof metricsPath !== 'string' || !metricsPath.startsWith('/')))
    throw new ServingOptionError('metricsPath must be a path such as "/metrics", or false');
  if (options.upstreamHealthPath !== undefined && (typeof options.upstreamHealthPath !== 'string' || !options.upstreamHealthPath.startsWith('/')))
    throw new ServingOptionError('upstreamHealthPath must be a path such as "/v2/health/ready"');
  const routes = createRouteTable(resolved.codec.name, options);
  const transport = upstream.protocol === 'https:' ? https : http;
  const agent = new transport.Agent({ keepAlive: true, maxSockets: 256 });
  // The defense's context is started while the upstream computes (see batching/prefetch.ts); the perturber takes it from there.
  const prefetcher = resolved.context && contextPrefetcher(resolved.context);
  const perturber = createPerturber({
    codec: resolved.codec,
    metrics: resolved.metrics,
    onFailure: resolved.onFailure,
    inputFormat: resolved.inputFormat,
    context: prefetcher?.context,
    answerErrorStatus: 502,
  });
  const serveMetrics = metricsHandler(resolved.metrics.registry, options.metricsText);
  // The request line never carries a client's API key, whatever header holds it.
  const identityHeader =
    typeof options.clients?.identity === 'string' && options.clients.identity.startsWith('header:') ? [options.clients.identity.slice(7)] : [];
  const httpLogger = resolved.logger ? createHttpLogger(redactingHeaders(resolved.logger, identityHeader)) : undefined;
  const gate = resolved.clients;
  // An escalation tier may need the inputs (a surrogate) where the default defense does not.
  const tiersNeedInputs = [...resolved.tiers.values()].some((tier) => tier.needs.length > 0);
  const adminPath = gate && resolved.clientsAdmin ? (resolved.clientsAdmin.path ?? DEFAULT_ADMIN_PATH) : undefined;
  const serveAdmin = gate && resolved.clientsAdmin ? adminHandler(gate, resolved.clientsAdmin) : undefined;
  /** A refusal (403/429/401/503) with its Retry-After, counted like any failure. */
  const refuse = (res: ServerResponse, label: string, error: unknown): void =>
    send(res, perturber.failure(label, error), error instanceof ClientRefusal ? { ...error.headers } : {});
  let draining = false;
  let inFlight = 0;
  const onIdle: (() => void)[] = [];
  const health = createHealth({
    upstream,
    upstreamHealthPath: options.upstreamHealthPath ?? (resolved.codec.name === 'kserve-v2' ? '/v2/health/ready' : undefined),
    timeoutMs: Math.min(timeoutMs, 5000),
    isDraining: () => draining,
    modelFailure: () => resolved.context?.failure?.(),
  });

  const send = (res: ServerResponse, outcome: Outcome, headers: http.OutgoingHttpHeaders = {}): void => {
    setDefenseRecord(res, outcome.record);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const text = JSON.stringify(outcome.body);
    res.writeHead(outcome.status, { ...headers, ...outcome.headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const fail = (res: ServerResponse, label: string, error: unknown): void => send(res, perturber.failure(label, error));

  const shadow = resolved.shadow;
  /** A drawn request goes to the shadow once its answer has been sent (the response's 'finish'), never before. */
  const toShadow = (res: ServerResponse, answered: NonNullable<Outcome['answered']>, inputs: InputRows | (() => InputRows | Promise<InputRows>)): void => {
    if (!shadow?.draw()) return;
    const tier = tierOf(answered.defense, resolved.defense, resolved.tiers);
    if (tier !== undefined) res.once('finish', () => shadow.offer({ tier, original: answered.original, defended: answered.defended, inputs }));
  };

  /** The client's headers to forward, without its framing (the caller sets its own Content-Length) or its Expect. */
  const requestHeaders = (req: IncomingMessage, drop: readonly string[]): http.OutgoingHttpHeaders => {
    const headers = forwardableHeaders(req.headers, ['host', 'content-length', 'expect', ...drop]);
    const client = req.socket.remoteAddress ?? '';
    headers['x-forwarded-for'] = req.headers['x-forwarded-for'] ? `${req.headers['x-forwarded-for']}, ${client}` : client;
    headers['x-forwarded-host'] = req.headers.host ?? '';
    headers['x-forwarded-proto'] = 'encrypted' in req.socket ? 'https' : 'http';
    return headers;
  };

  /**
   * Sends the request upstream; resolves with the response once its headers arrive. The body is one
   * the proxy framed itself: a Buffer sent with its Content-Length, or none at all.
   * Pooled (inference): a keep-alive connection the upstream closed while idle fails with ECONNRESET
   * on reuse (EPIPE while a large body is still being written to it); the request is then sent once
   * more, on a new connection. Not pooled (pass-through): a
   * connection of its own ("connection: close"), so that nothing an exchange whose answer the proxy
   * streams without reading could leave on it ever meets another request.
   */
  const callUpstream = (
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    headers: http.OutgoingHttpHeaders,
    body: Buffer | null,
    timer: { onFire?: () => void },
    pooled: boolean,
  ): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      if (body) headers['content-length'] = body.length;
      const send = (fresh: boolean): void => {
        const upstreamReq = transport.request(
          {
            protocol: upstream.protocol,
            hostname: upstream.hostname,
            port: upstream.port,
            method: req.method,
            path: basePath + path,
            headers,
            agent: fresh ? false : agent,
          },
          (answer) => {
            // Later faults surface on the answer (read with its own listeners). The pooled socket may
            // keep this request object reachable, so it must no longer hold this exchange's closures.
            upstreamReq.off('error', onError);
            upstreamReq.on('error', ignoreLateError);
            resolve(answer);
          },
        );
        timer.onFire = () => upstreamReq.destroy(new UpstreamTimeoutError(timeoutMs));
        const onError = (error: NodeJS.ErrnoException): void => {
          if (!fresh && upstreamReq.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE') && !res.destroyed) {
            send(true);
            return;
          }
          reject(error instanceof UpstreamTimeoutError ? error : upstreamUnavailable(error));
        };
        upstreamReq.once('error', onError);
        if (body) upstreamReq.end(body);
        else upstreamReq.end();
        onClientGone = () => upstreamReq.destroy();
      };
      let onClientGone: () => void = () => {};
      res.once('close', () => {
        if (!res.writableFinished) onClientGone();
      });
      send(!pooled);
    });

  /** One deadline per upstream exchange; each phase sets onFire to abort what it waits on. */
  const startTimer = (): { onFire?: () => void; clear(): void } => {
    const timer = {
      onFire: undefined as (() => void) | undefined,
      clear: () => {
        clearTimeout(handle);
        timer.onFire = undefined;
      },
    };
    const handle = setTimeout(() => timer.onFire?.(), timeoutMs);
    return timer;
  };

  const passThrough = async (req: IncomingMessage, res: ServerResponse, path: string, label: string): Promise<void> => {
    // A bodyless method forwards no body (one that came was refused by framingDoubt); any other
    // method's body is read whole, within maxBodyBytes, and sent with our own Content-Length.
    let body: Buffer | null = null;
    if (!BODYLESS_METHODS.has(req.method ?? 'GET')) {
      try {
        body = await readBody(req, maxBodyBytes);
      } catch (error) {
        fail(res, label, error instanceof BodyTooLargeError ? new RequestFormatError(`request: ${error.message}`, 413) : error);
        return;
      }
    }
    const timer = startTimer();
    let answer: IncomingMessage;
    try {
      answer = await callUpstream(req, res, path, requestHeaders(req, []), body, timer, false);
    } catch (error) {
      fail(res, label, error);
      return;
    } finally {
      timer.clear();
    }
    res.writeHead(answer.statusCode ?? 502, forwardableHeaders(answer.headers));
    answer.pipe(res);
    answer.once('error', () => res.destroy());
    answer.once('aborted', () => res.destroy());
  };

  const infer = async (
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    defense: Defense | null,
    label: string,
    ticket?: ClientTicket,
  ): Promise<void> => {
    /** What goes to the model: the request as parsed here, serialised again (see serialiseRequest). */
    let forwarded: Buffer;
    // The inputs a defense needs are read now: a request without them is refused before the
    // upstream works on it, and only a compact Float32Array (not the JSON tree) waits for the answer.
    let inputs: InputRows | undefined;
    let requestBody: unknown;
    try {
      const raw = await readBody(req, maxBodyBytes);
      // Most requests are not compressed: those skip the asynchronous decoder (a promise per request).
      const decoded = isIdentityEncoding(req.headers['content-encoding'])
        ? raw
        : await decodeBody(raw, req.headers['content-encoding'], maxBodyBytes).catch((error: Error) => {
            throw error.message.includes('maxOutputLength') || (error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE'
              ? new BodyTooLargeError(`the decoded body is over the limit of ${maxBodyBytes} bytes`)
              : new RequestFormatError(`the request body could not be decoded (${error.message})`);
          });
      if (!decoded)
        throw new RequestFormatError(`unsupported request content-encoding "${req.headers['content-encoding']}"; send gzip, deflate, br or none`, 415);
      requestBody = parseRequestJson(decoded.toString('utf8'));
      if (defense && defense.needs.length > 0) {
        // Numeric tensors come back synchronously; images are decoded (off the event loop) before anything is forwarded,
        // once their count has passed the row limit and the surrogate's queue (413, 503 before any decoding).
        const read = resolved.readInputs(requestBody, (rows) => admitRows(resolved.context, rows));
        inputs = read instanceof Promise ? await read : read;
        // Refused before the upstream spends any work on it: too many rows (413), or the surrogate's queue is full (503).
        admitRows(resolved.context, inputs.rows);
      } else if (ticket && (gate!.observeInputs || tiersNeedInputs)) {
        try {
          const read = resolved.readInputs(requestBody);
          inputs = read instanceof Promise ? await read : read;
        } catch (error) {
          // A detector that needs the inputs would be blind to this request: refused (400), never observed as if seen.
          if (gate!.requiresInputs) throw gate!.unreadableInputs(error);
          // Otherwise (only an escalation tier would use them) the detectors see the probabilities only.
        }
      }
      // Last, once the request passed every check: the model gets what was parsed and read above.
      forwarded = serialiseRequest(requestBody);
    } catch (error) {
      fail(res, label, error instanceof BodyTooLargeError ? new RequestFormatError(`request: ${error.message}`, 413) : error);
      return;
    }
    const timer = startTimer();
    let answer: IncomingMessage;
    let answerText: string;
    try {
      // The answer is decoded here anyway, so the upstream is not invited to compress it. The body is
      // JSON of our own: not encoded, and not in KServe's binary extension (whose JSON header length
      // would no longer hold).
      const headers = requestHeaders(req, ['accept-encoding', 'content-encoding', 'content-type', 'inference-header-content-length']);
      headers['content-type'] = 'application/json';
      const asked = callUpstream(req, res, path, headers, forwarded, timer, true);
      // The context depends on the inputs only: computed meanwhile (a small request's rows queue now, not after
      // its upstream round trip). Work the answer does not use is cancelled once the exchange ends, however it ends.
      if (prefetcher && inputs && defense && defense.needs.length > 0) res.once('close', prefetcher.start(defense.needs, inputs));
      answer = await asked;
      const answerRaw = await new Promise<Buffer>((resolve, reject) => {
        timer.onFire = () => {
          answer.destroy();
          reject(new UpstreamTimeoutError(timeoutMs));
        };
        readBody(answer, maxAnswerBytes).then(resolve, (error: unknown) =>
          reject(
            error instanceof BodyTooLargeError
              ? new ServingError(`model answer: over the limit of ${maxAnswerBytes} bytes`, 502, 'bad_answer')
              : upstreamUnavailable(error),
          ),
        );
      });
      const decoded = isIdentityEncoding(answer.headers['content-encoding'])
        ? answerRaw
        : await decodeBody(answerRaw, answer.headers['content-encoding'], maxAnswerBytes).catch(() => {
            throw new ServingError('model answer: could not be decoded', 502, 'bad_answer');
          });
      if (!decoded) throw new ServingError(`model answer: unsupported content-encoding "${answer.headers['content-encoding']}"`, 502, 'bad_answer');
      answerText = decoded.toString('utf8');
    } catch (error) {
      fail(res, label, error);
      return;
    } finally {
      timer.clear();
    }
    const status = answer.statusCode ?? 502;
    const headers = forwardableHeaders(answer.headers, ANSWER_HEADERS_DROPPED);
    if (status < 300 && answerText.length === 0) {
      send(res, perturber.failure(label, new ServingError('model answer: empty', 502, 'bad_answer')));
      return;
    }
    if (status >= 300) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(answerText);
      } catch {
        // Not JSON, so no codec reads probabilities in it: an ordinary error page, passed as it came.
        setDefenseRecord(res, perturber.screenErrorAnswer(label, status, undefined).record);
        res.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(answerText) });
        res.end(answerText);
        return;
      }
      send(res, perturber.screenErrorAnswer(label, status, parsed), headers);
      return;
    }
    let parsed: unknown;
    try {
      parsed = parseAnswerJson(answerText);
    } catch (error) {
      fail(res, label, error);
      return;
    }
    let refusalHeaders: Readonly<Record<string, string>> = {};
    const observer = ticket
      ? (probs: Parameters<ClientGate['observe']>[1]) =>
          gate!.observe(ticket, probs, gate!.observeInputs ? inputs : undefined, defense).catch((error: unknown) => {
            if (error instanceof ClientRefusal) refusalHeaders = error.headers;
            throw error;
          })
      : undefined;
    const outcome = await perturber.perturb(defense, () => inputs!, parsed, observer);
    if (outcome.answered) toShadow(res, outcome.answered, inputs ?? (() => resolved.readInputs(requestBody)));
    send(res, outcome, outcome.status >= 400 ? { ...headers, ...refusalHeaders } : headers);
  };

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    // An absolute-form target ("http://host/...") matches no route and is refused.
    const path = req.url ?? '/';
    const query = path.indexOf('?');
    const pathname = query < 0 ? path : path.slice(0, query);
    const read = method === 'GET' || method === 'HEAD';
    // First of all: a request whose framing is in doubt is answered 400 and its connection closed
    // (what else the client sent on it cannot be trusted to be framed as the proxy read it).
    const doubt = framingDoubt(method, req.headers);
    if (doubt !== undefined) {
      req.resume();
      res.setHeader('connection', 'close');
      fail(res, resolved.defense.spec, new RequestFormatError(`request: ${doubt}`));
      return;
    }
    if (read && pathname === livePath) return health.live(req, res);
    if (read && pathname === readyPath) return health.ready(req, res);
    if (metricsPath !== false && pathname === metricsPath && read) {
      serveMetrics(req, res);
      return;
    }
    if (adminPath !== undefined && pathname === adminPath) {
      req.resume();
      serveAdmin!(req, res);
      return;
    }
    if (draining) {
      req.resume();
      res.setHeader('connection', 'close');
      fail(res, resolved.defense.spec, new ServingError('the proxy is shutting down; retry on another instance', 503, 'draining'));
      return;
    }
    let defense: Defense | null;
    try {
      defense = selectDefense(resolved, req);
    } catch (error) {
      req.resume();
      fail(res, resolved.defense.spec, error);
      return;
    }
    const label = defense ? defense.spec : SKIPPED_LABEL;
    const decision = routes(method, pathname);
    if (decision.kind === 'refuse') {
      req.resume();
      fail(res, label, new ServingError(decision.message, decision.status, decision.status === 404 ? 'not_found' : 'bad_request'));
      return;
    }
    if (decision.kind === 'pass') {
      await passThrough(req, res, path, label);
      return;
    }
    let ticket: ClientTicket | undefined;
    if (gate) {
      // Admission before the body is read or anything is forwarded: a refused client costs no model work.
      try {
        ticket = await gate.admit(req);
      } catch (error) {
        req.resume();
        refuse(res, label, error);
        return;
      }
    }
    await infer(req, res, path, defense, label, ticket);
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    httpLogger?.(req, res);
    inFlight += 1;
    res.once('close', () => {
      inFlight -= 1;
      if (inFlight === 0) for (const resolve of onIdle.splice(0)) resolve();
    });
    if (draining) res.setHeader('connection', 'close');
    route(req, res).catch((error: unknown) => {
      // Anything unforeseen still ends in an error body, never in the upstream's answer.
      fail(res, resolved.defense.spec, error);
    });
  };

  return {
    handler,
    metrics: resolved.metrics,
    defense: resolved.defense,
    clients: gate,
    shadow,
    drain: () => {
      draining = true;
    },
    idle: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => onIdle.push(resolve))),
    close: () => {
      agent.destroy();
      void gate?.close();
      void shadow?.close();
      // The batched surrogate's timers and queue (see server/batching).
      void resolved.context?.close?.();
    },
  };
}

export interface RunningProxy {
  readonly proxy: DefenseProxy;
  readonly server: http.Server;
  /** e.g. "http://127.0.0.1:8081" */
  readonly url: string;
  /**
   * Graceful close: stops listening, answers for a moment (250 ms) what reached it before, then
   * answers new requests on open connections with 503, lets those in flight finish for up to
   * `deadlineMs` (default 10 s), then closes every connection.
   */
  close(deadlineMs?: number): Promise<void>;
}

/** How long a closing proxy goes on answering connections it accepted just before it stopped listening. */
const HANDOFF_SETTLE_MS = 250;

/** Starts the proxy on host:port (port 0 picks a free one). */
export async function startDefenseProxy(options: ProxyOptions & { port?: number; host?: string }): Promise<RunningProxy> {
  const { port = 0, host = '127.0.0.1', ...rest } = options;
  const proxy = createDefenseProxy(rest);
  // A shared client store connects first; if it cannot, the gate's fail mode covers the requests.
  await proxy.clients?.ready().catch(() => {});
  let stopping = false;
  const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    if (stopping) res.setHeader('connection', 'close');
    proxy.handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    proxy,
    server,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`,
    close: async (deadlineMs = 10_000) => {
      // Stop accepting first: a connection accepted after this no longer reaches a draining proxy.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      stopping = true;
      // Connections accepted just before (in a cluster, handed over by the primary while this worker
      // stopped listening) have not sent their request yet and look idle: closing them now would
      // reset them. They are answered as usual, with `connection: close`, for a moment first.
      await new Promise((resolve) => setTimeout(resolve, Math.min(HANDOFF_SETTLE_MS, deadlineMs)));
      proxy.drain();
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([proxy.idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs)))]);
      clearTimeout(timer);
      server.closeAllConnections();
      proxy.close();
      await closed;
    },
  };
}
