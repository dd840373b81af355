/**
 * The middleware's reading of a request's model inputs: once per request, whoever asks first (the
 * route through inputsOf, the detectors, the defense), since decoding an image costs milliseconds,
 * and twice that when several parts need it. A failed read is remembered too.
 */
import type { Request } from 'express';
import { RequestFormatError, ServingError } from '../errors.js';
import type { ResolvedServing } from '../options.js';
import type { InputRows } from '../protocols/index.js';

export interface InputReader {
  /** The request's inputs (a promise while images decode); throws, or rejects, as the first read did. */
  readInputs(req: Request): InputRows | Promise<InputRows>;
  /** The public inputsOf: the same rows, always a promise; needs express.json() mounted before (see unparsedBody). */
  inputsOf(req: Request): Promise<InputRows>;
}

export function createInputReader(resolved: ResolvedServing<Request>): InputReader {
  const readOnce = new WeakMap<Request, { value?: InputRows | Promise<InputRows>; error?: unknown }>();
  const readInputs = (req: Request): InputRows | Promise<InputRows> => {
    let memo = readOnce.get(req);
    if (!memo) {
      try {
        memo = { value: resolved.readInputs(req.body) };
      } catch (error) {
        memo = { error };
      }
      readOnce.set(req, memo);
    }
    if ('error' in memo) throw memo.error;
    return memo.value!;
  };
  const inputsOf = async (req: Request): Promise<InputRows> => {
    const unparsed = unparsedBody(req, 'inputsOf');
    if (unparsed) throw unparsed;
    return readInputs(req);
  };
  return { readInputs, inputsOf };
}

/** Whether the request carries body bytes (a Content-Length above 0, or chunked). */
function hasBody(req: Request): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) > 0);
}

/**
 * Why the request's body cannot hold the model inputs because no JSON parser read it, or undefined
 * when a codec should read it. Express 5's body-parser leaves req.body undefined for a body it does
 * not parse, Express 4's leaves {}: both are judged alike, so both majors answer the same status.
 * No body, or one that is not JSON, is the client's 400 or 415; a JSON body never parsed is the
 * server's setup mistake (express.json() not mounted before the middleware), a 500.
 * `who` names the part that needs the body, for that 500.
 */
export function unparsedBody(req: Request, who: string): ServingError | undefined {
  const body: unknown = req.body;
  const empty =
    body === undefined ||
    (typeof body === 'object' && body !== null && [Object.prototype, null].includes(Object.getPrototypeOf(body)) && Object.keys(body).length === 0);
  if (!empty) return undefined;
  if (!hasBody(req)) return new RequestFormatError('request: no body; send the request as JSON (content-type: application/json)');
  // The content type is not echoed: the answer and the log repeat nothing the client chose.
  if (!req.is('json')) return new RequestFormatError('request: the body is not JSON; send the request as JSON (content-type: application/json)', 415);
  return body === undefined
    ? new ServingError(`${who} needs the request body: mount express.json() before poisonPredictions`, 500, 'defense_failed')
    : undefined;
}
