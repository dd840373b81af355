/**
 * The middleware's response patch: for one defended request, res.json, res.send and (for routes
 * that write raw bytes) res.write/res.end are wrapped, so that whatever the route answers is
 * defended before Express sends it, and no path leaves the original probabilities out.
 *
 * Error answers (status >= 400) pass unchanged unless the codec can read probabilities in them, or
 * the route had begun its answer with res.write: those bytes are the start of the original answer,
 * so the error goes out with the codec's error body instead.
 */
import type { NextFunction, Request, Response } from 'express';
import type { Defense } from '../../defenses/index.js';
import type { ClientGate, ClientTicket } from '../clients/gate.js';
import { ServingError } from '../errors.js';
import { setDefenseRecord, type DefenseRecord } from '../logger.js';
import { selectDefense, type ResolvedServing } from '../options.js';
import { SKIPPED_LABEL, type AnswerObserver, type Outcome, type Perturber } from '../perturber.js';
import type { InputRows } from '../protocols/index.js';
import { unparsedBody } from './inputs.js';

const NO_BODY_STATUS = new Set([204, 304]);

/** A body as bytes, when it is some: Uint8Array (not a Buffer) and other views too, never read as an object ({"0":123,...}) or as "123,34,...". */
function bytesOf(body: unknown): Buffer | undefined {
  if (Buffer.isBuffer(body)) return body;
  return ArrayBuffer.isView(body) ? Buffer.from(body.buffer, body.byteOffset, body.byteLength) : undefined;
}

/** How the route's answer reached the patch, for defendBody. */
interface RouteAnswer {
  /** Text that must be JSON (a string, bytes, raw writes), not an object to serialize. */
  isText: boolean;
  /** Bytes the route wrote with res.write before end(): the start of an answer, if it then fails. */
  wroteBefore?: boolean;
  /** The route wrote more than MAX_HELD_BYTES: nothing of it is held or sent. */
  tooLarge?: boolean;
}

/**
 * The most bytes of raw writes held back until end(), as the proxy's default answer limit: a route
 * that streams without end (or a huge answer) costs bounded memory; past it the answer is withheld.
 */
export const MAX_HELD_BYTES = 64 * 1024 * 1024;

/** What one held chunk costs beyond its bytes (a Buffer's own memory), counted against MAX_HELD_BYTES. */
const CHUNK_OVERHEAD_BYTES = 256;

export interface ResponsePatchDeps {
  resolved: ResolvedServing<Request>;
  perturber: Perturber;
  /** The request's model inputs, read once per request whoever asks first. */
  readInputs(req: Request): InputRows | Promise<InputRows>;
  /** Hands a sent answer to the shadow attacker (when one is drawn). */
  toShadow(req: Request, res: Response, answered: NonNullable<Outcome['answered']>): void;
}

/** Patches `res` for one request, then calls `next` (the route); `ticket`: the client gate admitted the request. */
export type DefendResponse = (req: Request, res: Response, next: NextFunction, ticket?: ClientTicket) => void;

export interface ResponsePatch {
  readonly defendResponse: DefendResponse;
  /** Answers a patched request with `outcome`, past its patches (the error handler's way out); false for a request never patched. */
  finish(req: Request, outcome: Outcome): boolean;
}

/** Express's own methods, kept before the patch: the defended answer goes out through them. */
interface OriginalMethods {
  json: Response['json'];
  send: Response['send'];
  write: Response['write'];
  end: Response['end'];
}

/**
 * One patched response's phase: `route` until the route answers; `defending` while its first answer is
 * defended (a second answer of the route then is dropped: passed to Express it would go out
 * undefended before the defended one); `sent` once the defended answer (or an error) is out, when
 * every call goes straight to Express, which refuses a second answer as it would without the patch.
 */
interface PatchState {
  phase: 'route' | 'defending' | 'sent';
  readonly original: OriginalMethods;
  /** The route answered again while its first answer was being defended (logged once). */
  dropped?: boolean;
}

/** What a patched method does with the route's call: defend it, drop it (a second answer while the first is defended), or pass it to Express. */
type RouteCall = 'defend' | 'drop' | 'express';

function routeCall(state: PatchState, onDrop: () => void): RouteCall {
  if (state.phase === 'route') return 'defend';
  if (state.phase === 'sent') return 'express';
  if (!state.dropped) {
    state.dropped = true;
    onDrop();
  }
  return 'drop';
}

function levelOf(record: DefenseRecord): 'info' | 'warn' {
  return record.outcome === 'defended' || record.outcome === 'undefended' || record.outcome === 'passed_error' || record.outcome === 'fallback_argmax'
    ? 'info'
    : 'warn';
}

/** Defends one route answer (see defendBody). */
type Handle = (body: unknown, how: RouteAnswer) => void;

/** Routes that write raw bytes: res.write and res.end hold them back until end(), then `handle` defends them like a JSON string. */
function patchRawWrites(req: Request, res: Response, state: PatchState, handle: Handle, onDrop: () => void): void {
  const { write: originalWrite, end: originalEnd } = state.original;
  const buffered: Buffer[] = [];
  let held = 0;
  /** Holds a chunk back; false when the answer is now over MAX_HELD_BYTES (already answered with an error). */
  const hold = (chunk: unknown, rest: unknown[]): boolean => {
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return true;
    const bytes = bytesOf(chunk) ?? Buffer.from(String(chunk), typeof rest[0] === 'string' ? (rest[0] as BufferEncoding) : 'utf8');
    // Each held chunk costs its bookkeeping too: many tiny writes are bounded as well as a few large ones.
    held += bytes.length + CHUNK_OVERHEAD_BYTES;
    if (held > MAX_HELD_BYTES) {
      buffered.length = 0;
      handle(undefined, { isText: false, tooLarge: true });
      return false;
    }
    buffered.push(bytes);
    return true;
  };
  const callbackIn = (args: unknown[]): (() => void) | undefined => args.find((a): a is () => void => typeof a === 'function');
  res.write = function write(chunk: unknown, ...rest: unknown[]): boolean {
    const call = routeCall(state, onDrop);
    // Bytes after the answer ended have nowhere to go (Node would raise write-after-end on the response).
    if (call === 'express' && !res.writableEnded) return (originalWrite as (...args: unknown[]) => boolean).call(res, chunk, ...rest);
    const callback = callbackIn(rest);
    // A write that goes nowhere (after the answer, or past the cap) fails its callback as Node's write-after-end
    // does, so a route awaiting it learns so instead of waiting for ever.
    const refused = (): boolean => {
      if (callback) process.nextTick(callback, new Error('not written: the answer was already sent, or withheld at the size the middleware holds'));
      return false;
    };
    if (call !== 'defend' || !hold(chunk, rest)) return refused();
    if (callback) process.nextTick(callback);
    return true;
  } as Response['write'];
  res.end = function end(chunk?: unknown, ...rest: unknown[]): Response {
    const call = routeCall(state, onDrop);
    if (call === 'express' && !res.writableEnded) return (originalEnd as (...args: unknown[]) => Response).call(res, chunk, ...rest);
    if (call !== 'defend') return res;
    const wroteBefore = buffered.length > 0;
    const callback = callbackIn([chunk, ...rest]);
    if (callback) res.once('finish', callback);
    if (!hold(chunk, rest)) return res;
    if (buffered.length === 0 && (NO_BODY_STATUS.has(res.statusCode) || req.method === 'HEAD')) {
      state.phase = 'sent';
      return (originalEnd as () => Response).call(res);
    }
    handle(Buffer.concat(buffered).toString('utf8'), { isText: true, wroteBefore });
    return res;
  } as Response['end'];
}

/** res.json and res.send: their body defended by `handle` (a string or Buffer as JSON text). */
function patchJsonAndSend(res: Response, state: PatchState, handle: Handle, onDrop: () => void): void {
  const { json: originalJson, send: originalSend } = state.original;
  res.json = function json(body?: unknown): Response {
    const call = routeCall(state, onDrop);
    if (call === 'express') return originalJson.call(res, body);
    if (call === 'drop') return res;
    handle(body, { isText: false });
    return res;
  };
  res.send = function send(body?: unknown): Response {
    const call = routeCall(state, onDrop);
    if (call === 'express') return originalSend.call(res, body);
    if (call === 'drop') return res;
    const bytes = bytesOf(body);
    if (bytes) handle(bytes.toString('utf8'), { isText: true });
    else if (typeof body === 'string') handle(body, { isText: true });
    else handle(body, { isText: false });
    return res;
  };
}

export function createResponsePatch(deps: ResponsePatchDeps): ResponsePatch {
  const { resolved, perturber, readInputs } = deps;
  const { logger } = resolved;
  const gate = resolved.clients;
  // The defense chosen for a request before its observation (null: skipped), for the gate's fail mode.
  const currentChoice = new WeakMap<Request, Defense | null>();
  /** Per patched request: answers it with an outcome, past the response patches. */
  const finishers = new WeakMap<Request, (outcome: Outcome) => void>();

  /** The ticket's observer: the client's observation, then the defense its assessment names. */
  const observerFor =
    (req: Request, ticket: ClientTicket): AnswerObserver =>
    async (probs: Parameters<ClientGate['observe']>[1]) => {
      let inputs: InputRows | undefined;
      const unparsed = gate!.requiresInputs ? unparsedBody(req, 'client detection') : undefined;
      if (unparsed) throw unparsed;
      if (gate!.observeInputs && req.body !== undefined) {
        try {
          inputs = await readInputs(req);
        } catch (error) {
          // A detector that needs the inputs would be blind to this request: refused (400), never observed as if seen.
          if (gate!.requiresInputs) throw gate!.unreadableInputs(error);
        }
      }
      return gate!.observe(ticket, probs, inputs, currentChoice.get(req) ?? null);
    };

  /** Sends the outcome through Express's own res.json (a refusal's Retry-After comes with the outcome's headers). */
  const emit = (req: Request, res: Response, state: PatchState, outcome: Outcome): void => {
    // Answered already (the error handler's way out came first): this later outcome has nowhere to go.
    if (state.phase === 'sent' && res.writableEnded) return;
    state.phase = 'sent';
    setDefenseRecord(res, outcome.record);
    logger?.[levelOf(outcome.record)]({ ...outcome.record, method: req.method, url: req.originalUrl }, 'model answer');
    if (res.headersSent) {
      // The route already flushed headers (e.g. a Content-Length for the original body): the defended
      // body cannot be sent in their frame, so the connection is cut rather than leak the original.
      res.destroy();
      return;
    }
    res.status(outcome.status);
    if (outcome.headers) res.set(outcome.headers);
    if (outcome.answered) deps.toShadow(req, res, outcome.answered);
    state.original.json.call(res, outcome.body);
  };

  /** Defends one answer body (a parsed object, or text that must be JSON). */
  const defendBody = (req: Request, res: Response, state: PatchState, ticket: ClientTicket | undefined, body: unknown, how: RouteAnswer): void => {
    state.phase = 'defending';
    let defense: Defense | null;
    try {
      defense = selectDefense(resolved, req);
    } catch (error) {
      emit(req, res, state, perturber.failure(resolved.defense.spec, error));
      return;
    }
    if (NO_BODY_STATUS.has(res.statusCode) || req.method === 'HEAD') {
      state.phase = 'sent';
      (state.original.end as () => Response).call(res);
      return;
    }
    const label = defense ? defense.spec : SKIPPED_LABEL;
    if (how.tooLarge) {
      // An error page the route was writing keeps its status; an answer gets 500.
      const status = res.statusCode >= 400 ? res.statusCode : 500;
      const error = new ServingError(`the route's answer is over ${MAX_HELD_BYTES} bytes; it was withheld`, status, 'bad_answer');
      emit(req, res, state, perturber.failure(label, error));
      return;
    }
    let parsed = body;
    if (how.isText) {
      try {
        parsed = JSON.parse(body as string);
      } catch {
        parsed = undefined;
      }
    }
    if (res.statusCode >= 400 && how.wroteBefore && parsed === undefined) {
      // The route began its answer, then failed (next(error), a throw, a broken stream, an error status of its own):
      // the held bytes joined to the error page would be the original answer's start, so none go out. A whole JSON
      // error written in pieces is screened below like any error body.
      const error = new ServingError('the route failed after it began its answer; the answer was withheld', res.statusCode, 'bad_answer');
      emit(req, res, state, perturber.failure(label, error));
      return;
    }
    if (res.statusCode >= 400) {
      // A non-JSON error page: no codec could find probabilities in it.
      if (parsed === undefined) {
        state.phase = 'sent';
        state.original.send.call(res, body);
      } else emit(req, res, state, perturber.screenErrorAnswer(label, res.statusCode, parsed));
      return;
    }
    const unparsed = defense && defense.needs.length > 0 ? unparsedBody(req, 'the defense') : undefined;
    if (unparsed) {
      emit(req, res, state, perturber.failure(label, unparsed));
      return;
    }
    currentChoice.set(req, defense);
    const result = perturber.perturb(defense, () => readInputs(req), parsed, ticket ? observerFor(req, ticket) : undefined);
    if (result instanceof Promise)
      result.then(
        (outcome) => emit(req, res, state, outcome),
        (error: unknown) => emit(req, res, state, perturber.failure(label, error)),
      );
    else emit(req, res, state, result);
  };

  const defendResponse: DefendResponse = (req, res, next, ticket) => {
    const state: PatchState = { phase: 'route', original: { json: res.json, send: res.send, write: res.write, end: res.end } };
    // The surrogate's queue is full: refuse (503, Retry-After) before the route spends work on the request.
    if (resolved.context?.admit && !resolved.chooseDefense && resolved.defense.needs.length > 0) {
      try {
        resolved.context.admit(1);
      } catch (error) {
        emit(req, res, state, perturber.failure(resolved.defense.spec, error));
        return;
      }
    }
    const handle: Handle = (body, how) => defendBody(req, res, state, ticket, body, how);
    const onDrop = (): void =>
      logger?.warn({ method: req.method, url: req.originalUrl }, 'the route answered again while its answer was being defended: the second answer was dropped');
    patchJsonAndSend(res, state, handle, onDrop);
    patchRawWrites(req, res, state, handle, onDrop);
    finishers.set(req, (outcome) => emit(req, res, state, outcome));
    next();
  };

  const finish = (req: Request, outcome: Outcome): boolean => {
    const finisher = finishers.get(req);
    finisher?.(outcome);
    return finisher !== undefined;
  };

  return { defendResponse, finish };
}
