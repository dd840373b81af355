/**
 * The middleware's reading of a request's model inputs: once per request, whoever asks first (the
 * route through inputsOf, the detectors, the defense), since decoding an image costs milliseconds,
 * and twice that when several parts need it. A failed read is remembered too.
 */
import type { Request } from 'express';
import { ServingError } from '../errors.js';
import type { ResolvedServing } from '../options.js';
import type { InputRows } from '../protocols/index.js';

export interface InputReader {
  /** The request's inputs (a promise while images decode); throws, or rejects, as the first read did. */
  readInputs(req: Request): InputRows | Promise<InputRows>;
  /** The public inputsOf: the same rows, always a promise; needs express.json() mounted before. */
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
    if (req.body === undefined) throw new ServingError('inputsOf needs the request body: mount express.json() before poisonPredictions', 500, 'defense_failed');
    return readInputs(req);
  };
  return { readInputs, inputsOf };
}
