/**
 * The exchange with the model server: the request the proxy framed itself, one deadline per
 * exchange, the answer read whole (inference) or its headers only (pass-through), and the faults
 * mapped to the client's status: refused or reset → 502, slower than timeoutMs → 504.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { ServingError } from '../errors.js';
import { BodyTooLargeError, decodeBody, forwardableHeaders, isIdentityEncoding, readBody } from './bodies.js';

export class UpstreamTimeoutError extends ServingError {
  constructor(timeoutMs: number) {
    super(`the model server did not answer within ${timeoutMs} ms`, 504, 'upstream_timeout');
  }
}

function upstreamUnavailable(error: unknown): ServingError {
  const code = (error as NodeJS.ErrnoException)?.code;
  return new ServingError(`the model server is unavailable (${code ?? (error as Error)?.message ?? 'connection failed'})`, 502, 'upstream_unavailable');
}

/** Stands in for a settled exchange's error listener: a late socket error is then neither fatal nor kept. */
function ignoreLateError(): void {}

/** One deadline per upstream exchange; each phase sets onFire to abort what it waits on. */
export interface ExchangeTimer {
  onFire?: () => void;
  clear(): void;
}

/** The client's headers to forward, without its framing (the caller sets its own Content-Length) or its Expect. */
export function requestHeaders(req: IncomingMessage, drop: readonly string[]): http.OutgoingHttpHeaders {
  const headers = forwardableHeaders(req.headers, ['host', 'content-length', 'expect', ...drop]);
  const client = req.socket.remoteAddress ?? '';
  headers['x-forwarded-for'] = req.headers['x-forwarded-for'] ? `${req.headers['x-forwarded-for']}, ${client}` : client;
  headers['x-forwarded-host'] = req.headers.host ?? '';
  headers['x-forwarded-proto'] = 'encrypted' in req.socket ? 'https' : 'http';
  return headers;
}

export interface UpstreamOptions {
  upstream: URL;
  /** Prepended to every forwarded path (the upstream URL's own path, without its trailing slash). */
  basePath: string;
  timeoutMs: number;
  /** Largest model answer read, bytes (decoded). */
  maxAnswerBytes: number;
}

export interface Upstream {
  startTimer(): ExchangeTimer;
  /**
   * Sends the request upstream; resolves with the response once its headers arrive. The body is one
   * the proxy framed itself: a Buffer sent with its Content-Length, or none at all.
   * Pooled (inference): a keep-alive connection the upstream closed while idle fails with ECONNRESET
   * on reuse (EPIPE while a large body is still being written to it); the request is then sent once
   * more, on a new connection. Not pooled (pass-through): a connection of its own ("connection: close"),
   * so that nothing an exchange whose answer the proxy streams without reading could leave on it ever
   * meets another request.
   */
  call(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    headers: http.OutgoingHttpHeaders,
    body: Buffer | null,
    timer: ExchangeTimer,
    pooled: boolean,
  ): Promise<IncomingMessage>;
  /** The answer's body, read whole within maxAnswerBytes and decoded, as text: 502 for what cannot be read, 504 past the deadline. */
  readAnswer(answer: IncomingMessage, timer: ExchangeTimer): Promise<string>;
  /** Closes the keep-alive connections. */
  close(): void;
}

export function createUpstream(options: UpstreamOptions): Upstream {
  const { upstream, basePath, timeoutMs, maxAnswerBytes } = options;
  const transport = upstream.protocol === 'https:' ? https : http;
  const agent = new transport.Agent({ keepAlive: true, maxSockets: 256 });

  const call: Upstream['call'] = (req, res, path, headers, body, timer, pooled) =>
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

  const startTimer = (): ExchangeTimer => {
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

  const readAnswer = async (answer: IncomingMessage, timer: ExchangeTimer): Promise<string> => {
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
    return decoded.toString('utf8');
  };

  return { startTimer, call, readAnswer, close: () => agent.destroy() };
}
