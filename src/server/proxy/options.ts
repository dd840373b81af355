/**
 * The proxy's options: their names, defaults and checks, resolved once when the proxy is built.
 * The serving options (defense, protocol, clients, ...) are resolved by ../options.ts; the proxy's
 * own (upstream, limits, its own paths) are checked here.
 */
import type { IncomingMessage } from 'node:http';
import { ServingOptionError } from '../errors.js';
import { resolveServingOptions, SERVING_OPTION_NAMES, type ResolvedServing, type ServingOptions } from '../options.js';
import type { RouteOptions } from './routes.js';

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

/** The proxy's options once checked, with their defaults. */
export interface ResolvedProxyOptions {
  /** The serving options (defense, codec, clients, ...). */
  serving: ResolvedServing<IncomingMessage>;
  upstream: URL;
  /** The upstream's path prefix, without its trailing slash: prepended to every forwarded path. */
  basePath: string;
  timeoutMs: number;
  maxBodyBytes: number;
  maxAnswerBytes: number;
  metricsPath: string | false;
  livePath: string | false;
  readyPath: string | false;
  /** Unset: /readyz takes any upstream answer below 500 to GET / as ready. */
  upstreamHealthPath?: string;
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

/** Checks the options (ServingOptionError naming the option) and fills in the defaults. */
export function resolveProxyOptions(options: ProxyOptions): ResolvedProxyOptions {
  if (!options || typeof options !== 'object')
    throw new ServingOptionError('options are required, e.g. { upstream: "http://127.0.0.1:8080", defense: "rounding:decimals=2" }');
  const servingOptions: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (PROXY_OPTION_NAMES.includes(key)) continue;
    if (!SERVING_OPTION_NAMES.includes(key))
      throw new ServingOptionError(`unknown option ${key}; allowed: ${[...PROXY_OPTION_NAMES, ...SERVING_OPTION_NAMES].join(', ')}`);
    servingOptions[key] = value;
  }
  const serving = resolveServingOptions(servingOptions as unknown as ServingOptions<IncomingMessage>);
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
  const upstreamHealthPath = options.upstreamHealthPath ?? (serving.codec.name === 'kserve-v2' ? '/v2/health/ready' : undefined);
  return { serving, upstream, basePath, timeoutMs, maxBodyBytes, maxAnswerBytes, metricsPath, livePath, readyPath, upstreamHealthPath };
}
