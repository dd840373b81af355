/**
 * A pass-through route (health, metadata): forwarded on a connection of its own, its answer
 * streamed back untouched. A bodyless method forwards no body (one that came was refused by
 * framingDoubt); any other method's body is read whole, within maxBodyBytes, and sent with the
 * proxy's own Content-Length.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { requestBodyError, type ProxyAnswers } from './answer.js';
import { BODYLESS_METHODS, forwardableHeaders, readBody } from './bodies.js';
import { requestHeaders, type Upstream } from './upstream.js';

export type PassThroughRoute = (req: IncomingMessage, res: ServerResponse, path: string, label: string) => Promise<void>;

export function createPassThrough(upstream: Upstream, answers: ProxyAnswers, maxBodyBytes: number): PassThroughRoute {
  return async (req, res, path, label) => {
    let body: Buffer | null = null;
    if (!BODYLESS_METHODS.has(req.method ?? 'GET')) {
      try {
        body = await readBody(req, maxBodyBytes);
      } catch (error) {
        answers.fail(res, label, requestBodyError(error));
        return;
      }
    }
    const timer = upstream.startTimer();
    let answer: IncomingMessage;
    try {
      answer = await upstream.call(req, res, path, requestHeaders(req, []), body, timer, false);
    } catch (error) {
      answers.fail(res, label, error);
      return;
    } finally {
      timer.clear();
    }
    res.writeHead(answer.statusCode ?? 502, forwardableHeaders(answer.headers));
    answer.pipe(res);
    answer.once('error', () => res.destroy());
    answer.once('aborted', () => res.destroy());
  };
}
