/**
 * The proxy's own health, apart from the upstream's routes: /healthz answers 200 while the process
 * serves (liveness); /readyz answers 200 only when the proxy is not draining and the upstream
 * answers a probe (readiness). A proxy is built after its surrogate is loaded; one whose surrogate
 * can no longer answer (its worker thread died) is not ready: every defended request would fail closed.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';

export interface HealthOptions {
  upstream: URL;
  /** Upstream path probed by /readyz: a 2xx answer is ready. Unset: any answer below 500 to GET / is. */
  upstreamHealthPath?: string;
  /** Probe timeout, milliseconds. */
  timeoutMs: number;
  isDraining(): boolean;
  /** Why the defense's models cannot answer (a dead surrogate thread): not ready, whatever the upstream says. */
  modelFailure?(): Error | undefined;
}

export interface Health {
  live(req: IncomingMessage, res: ServerResponse): void;
  ready(req: IncomingMessage, res: ServerResponse): void;
}

function answer(res: ServerResponse, status: number, body: Record<string, unknown>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export function createHealth(options: HealthOptions): Health {
  const transport = options.upstream.protocol === 'https:' ? https : http;
  const basePath = options.upstream.pathname.replace(/\/$/, '');
  const probePath = basePath + (options.upstreamHealthPath ?? '/');
  const isUp = (status: number): boolean => (options.upstreamHealthPath ? status >= 200 && status < 300 : status < 500);

  /** Resolves with the upstream's status, or the reason it gave none. */
  const probe = (): Promise<{ ok: boolean; detail: string }> =>
    new Promise((resolve) => {
      const req = transport.request(
        {
          protocol: options.upstream.protocol,
          hostname: options.upstream.hostname,
          port: options.upstream.port,
          method: 'GET',
          path: probePath,
          agent: false,
          timeout: options.timeoutMs,
        },
        (res) => {
          res.resume();
          const status = res.statusCode ?? 0;
          resolve({ ok: isUp(status), detail: `GET ${probePath} answered ${status}` });
        },
      );
      req.once('timeout', () => req.destroy(new Error(`no answer within ${options.timeoutMs} ms`)));
      req.once('error', (error: NodeJS.ErrnoException) => resolve({ ok: false, detail: `GET ${probePath}: ${error.code ?? error.message}` }));
      req.end();
    });

  return {
    live: (_req, res) => answer(res, 200, { status: 'live' }),
    ready: (_req, res) => {
      if (options.isDraining()) {
        answer(res, 503, { status: 'draining' });
        return;
      }
      const failure = options.modelFailure?.();
      if (failure) {
        answer(res, 503, { status: 'surrogate_unavailable', surrogate: failure.message });
        return;
      }
      void probe().then(({ ok, detail }) => answer(res, ok ? 200 : 503, { status: ok ? 'ready' : 'upstream_unavailable', upstream: detail }));
    },
  };
}
