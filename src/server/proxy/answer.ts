/**
 * How the proxy writes its own answers: an outcome of the perturber (a defended answer or an error)
 * as JSON with its Content-Length, the defense record kept for the log.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { setDefenseRecord } from '../logger.js';
import type { Outcome, Perturber } from '../perturber.js';
import { RequestFormatError } from '../errors.js';
import { BodyAbortedError, BodyTooLargeError } from './bodies.js';

export interface ProxyAnswers {
  /** The outcome's body; `headers` first, the outcome's own (Retry-After, ...) over them. */
  send(res: ServerResponse, outcome: Outcome, headers?: OutgoingHttpHeaders): void;
  /** The error answer for `error`, counted under `label`. */
  fail(res: ServerResponse, label: string, error: unknown): void;
}

export function createAnswers(perturber: Perturber): ProxyAnswers {
  const send = (res: ServerResponse, outcome: Outcome, headers: OutgoingHttpHeaders = {}): void => {
    setDefenseRecord(res, outcome.record);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const text = JSON.stringify(outcome.body);
    res.writeHead(outcome.status, { ...headers, ...outcome.headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  return { send, fail: (res, label, error) => send(res, perturber.failure(label, error)) };
}

/**
 * A request body over the limit is the client's fault (413), named as such; so is one the client cut
 * off (400, which nobody reads): counted as a bad request, never as a failure of the defense.
 */
export function requestBodyError(error: unknown): unknown {
  if (error instanceof BodyTooLargeError) return new RequestFormatError(`request: ${error.message}`, 413);
  if (error instanceof BodyAbortedError) return new RequestFormatError(`request: ${error.message}`);
  return error;
}
