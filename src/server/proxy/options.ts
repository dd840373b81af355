/**
 * The proxy's options: their names, defaults and checks, resolved once when the proxy is built.
 * The serving options (defense, protocol, clients, ...) are resolved by ../options.ts; the proxy's
 * own (upstream, limits, its own paths) are checked here.
 */
import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { callable, joinPath, keysOf, optionStyle, parseOptions, positiveInteger, SENTENCE, trueOrFalse } from '../../validation/index.js';
import { ServingOptionError } from '../errors.js';
import { resolveServingOptions, SERVING_OPTION_NAMES, type ResolvedServing, type ServingOptions } from '../options.js';
import type { MetricsAccess } from './metrics-access.js';
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
  /**
   * Bearer token /metrics requires. The metrics show how each answer was changed, so they are not
   * served without a token (403) unless `metricsPublic` is set.
   */
  metricsToken?: string;
  /** Serve /metrics to anyone who reaches the port (a port clients cannot reach). Default false. */
  metricsPublic?: boolean;
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
  metricsAccess: MetricsAccess;
  livePath: string | false;
  readyPath: string | false;
  /** Unset: /readyz takes any upstream answer below 500 to GET / as ready. */
  upstreamHealthPath?: string;
}

/** What a user writes for the upstream: an http(s) URL without a query or fragment (a path prefix is kept). */
const upstreamSchema = z.unknown().transform((value, context): URL => {
  let url: URL | undefined;
  try {
    url = typeof value === 'string' || value instanceof URL ? new URL(String(value)) : undefined;
  } catch {
    url = undefined;
  }
  if (value === undefined) context.addIssue({ code: 'custom', message: 'is required: the model server’s URL, e.g. "http://127.0.0.1:8080"', params: SENTENCE });
  else if (!url) context.addIssue({ code: 'custom', message: 'a URL such as "http://127.0.0.1:8080"' });
  else if (url.protocol !== 'http:' && url.protocol !== 'https:') context.addIssue({ code: 'custom', message: 'an http:// or https:// URL' });
  else if (url.search || url.hash)
    context.addIssue({ code: 'custom', message: 'must not carry a query or a fragment; the client’s query is forwarded', params: SENTENCE });
  else return url;
  return z.NEVER;
});

/** One of the proxy's own paths, or false for none. */
const ownPath = (fallback: string) => {
  const what = `a path such as "${fallback}", or false`;
  return z.union([z.literal(false), z.string().startsWith('/', { error: what })], { error: what }).default(fallback);
};

/** The proxy's own options, beside the serving options (whose shape ../options.ts checks, naming them). */
const proxySchema = z.strictObject(
  {
    upstream: upstreamSchema,
    timeoutMs: positiveInteger().default(30_000),
    maxBodyBytes: positiveInteger().default(10 * 1024 * 1024),
    maxAnswerBytes: positiveInteger().default(64 * 1024 * 1024),
    metricsPath: ownPath('/metrics'),
    metricsText: callable<() => Promise<string>>('a function () => Promise of the metrics text').optional(),
    metricsToken: z
      .string({ error: 'a string of at least 16 characters without spaces' })
      .regex(/^\S{16,}$/, { error: 'a string of at least 16 characters without spaces' })
      .optional(),
    metricsPublic: trueOrFalse().default(false),
    livePath: ownPath('/healthz'),
    readyPath: ownPath('/readyz'),
    upstreamHealthPath: z.string({ error: 'a path such as "/v2/health/ready"' }).startsWith('/', { error: 'a path such as "/v2/health/ready"' }).optional(),
    // Each route is read by routes.ts, which says what to write.
    inferRoutes: z.array(z.string(), { error: 'a list of routes such as ["POST /predict"]' }).optional(),
    passRoutes: z.array(z.string(), { error: 'a list of routes such as ["GET /health"]' }).optional(),
    passUnknownRoutes: trueOrFalse().optional(),
    ...Object.fromEntries(SERVING_OPTION_NAMES.map((name) => [name, z.unknown().optional()])),
  } satisfies Record<Exclude<keyof ProxyOptions, keyof ServingOptions>, z.ZodType>,
  { error: 'an object, e.g. { upstream: "http://127.0.0.1:8080", defense: "rounding:decimals=2" }' },
);

/** Every option the proxy takes (its own and the serving options), read from its schema. */
export const PROXY_OPTION_NAMES: readonly string[] = keysOf(proxySchema);

const style = optionStyle(ServingOptionError, '', {
  name: (path) => (path.length ? joinPath('', path) : 'options'),
  unknownKeys: (_name, keys, allowed) => `unknown option${keys.length > 1 ? 's' : ''} ${keys.join(', ')}; allowed: ${allowed.join(', ')}`,
});

/** Checks the options (ServingOptionError naming the option) and fills in the defaults. */
export function resolveProxyOptions(options: ProxyOptions): ResolvedProxyOptions {
  // The proxy's own options first: a mistake there is found before the serving layer builds anything.
  const own = parseOptions(proxySchema, options, style);
  const servingOptions = Object.fromEntries(Object.entries(options).filter(([key]) => SERVING_OPTION_NAMES.includes(key)));
  const serving = resolveServingOptions(servingOptions as unknown as ServingOptions<IncomingMessage>);
  const { upstream, timeoutMs, maxBodyBytes, maxAnswerBytes, metricsPath, livePath, readyPath, metricsToken, metricsPublic } = own;
  if (metricsToken !== undefined && metricsPublic)
    throw new ServingOptionError('metricsToken and metricsPublic: give one (a token, or a public /metrics on a port clients cannot reach), not both');
  const metricsAccess: MetricsAccess = { public: metricsPublic, ...(metricsToken !== undefined ? { token: metricsToken } : {}) };
  const basePath = upstream.pathname.replace(/\/$/, '');
  const upstreamHealthPath = own.upstreamHealthPath ?? (serving.codec.name === 'kserve-v2' ? '/v2/health/ready' : undefined);
  return { serving, upstream, basePath, timeoutMs, maxBodyBytes, maxAnswerBytes, metricsPath, metricsAccess, livePath, readyPath, upstreamHealthPath };
}
