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
 *
 * This file puts the parts together: proxy/options.ts (the options), proxy/dispatch.ts (where a
 * request goes), proxy/inference.ts (the defended route), proxy/pass-through.ts, proxy/upstream.ts
 * (the exchange with the model server), proxy/health.ts.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Defense } from '../defenses/index.js';
import { createHttpLogger, redactingHeaders } from './logger.js';
import type { ServingMetrics } from './metrics.js';
import { createPerturber } from './perturber.js';
import { createAnswers } from './proxy/answer.js';
import { createDispatch } from './proxy/dispatch.js';
import { createHealth } from './proxy/health.js';
import { createInferenceRoute } from './proxy/inference.js';
import { resolveProxyOptions, type ProxyOptions } from './proxy/options.js';
import { createPassThrough } from './proxy/pass-through.js';
import { createRouteTable } from './proxy/routes.js';
import { createUpstream } from './proxy/upstream.js';
import { contextPrefetcher } from './batching/prefetch.js';
import type { ClientGate } from './clients/gate.js';
import type { ShadowAttacker } from './shadow/index.js';

export type { ProxyOptions } from './proxy/options.js';

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

export function createDefenseProxy(options: ProxyOptions): DefenseProxy {
  const resolvedOptions = resolveProxyOptions(options);
  const { serving, upstream: upstreamUrl, timeoutMs } = resolvedOptions;
  const routes = createRouteTable(serving.codec.name, options);
  const upstream = createUpstream(resolvedOptions);
  // The defense's context is started while the upstream computes (see batching/prefetch.ts); the perturber takes it from there.
  const prefetcher = serving.context && contextPrefetcher(serving.context);
  const perturber = createPerturber({
    codec: serving.codec,
    metrics: serving.metrics,
    onFailure: serving.onFailure,
    inputFormat: serving.inputFormat,
    context: prefetcher?.context,
    answerErrorStatus: 502,
  });
  // The request line never carries a client's API key, whatever header holds it.
  const identityHeader =
    typeof options.clients?.identity === 'string' && options.clients.identity.startsWith('header:') ? [options.clients.identity.slice(7)] : [];
  const httpLogger = serving.logger ? createHttpLogger(redactingHeaders(serving.logger, identityHeader)) : undefined;
  const answers = createAnswers(perturber);
  let draining = false;
  let inFlight = 0;
  const onIdle: (() => void)[] = [];
  const health = createHealth({
    upstream: upstreamUrl,
    upstreamHealthPath: resolvedOptions.upstreamHealthPath,
    timeoutMs: Math.min(timeoutMs, 5000),
    isDraining: () => draining,
    modelFailure: () => serving.context?.failure?.(),
  });
  const dispatch = createDispatch({
    options: resolvedOptions,
    metricsText: options.metricsText,
    routes,
    health,
    answers,
    passThrough: createPassThrough(upstream, answers, resolvedOptions.maxBodyBytes),
    infer: createInferenceRoute({ options: resolvedOptions, perturber, upstream, answers, prefetcher }),
    isDraining: () => draining,
  });

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    httpLogger?.(req, res);
    inFlight += 1;
    res.once('close', () => {
      inFlight -= 1;
      if (inFlight === 0) for (const resolve of onIdle.splice(0)) resolve();
    });
    if (draining) res.setHeader('connection', 'close');
    dispatch(req, res).catch((error: unknown) => {
      // Anything unforeseen still ends in an error body, never in the upstream's answer.
      answers.fail(res, serving.defense.spec, error);
    });
  };

  return {
    handler,
    metrics: serving.metrics,
    defense: serving.defense,
    clients: serving.clients,
    shadow: serving.shadow,
    drain: () => {
      draining = true;
    },
    idle: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => onIdle.push(resolve))),
    close: () => {
      upstream.close();
      void serving.clients?.close();
      void serving.shadow?.close();
      // The batched surrogate's timers and queue (see server/batching).
      void serving.context?.close?.();
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
