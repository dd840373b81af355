/**
 * Mount mode: `poisonPredictions(options)` returns Express (5 or 4) middleware that defends the
 * JSON a route sends, without the route changing a line. It wraps res.json, res.send and, for
 * routes that write raw bytes, res.write/res.end, so no path leaves the original probabilities out.
 *
 * Error answers (status >= 400) pass unchanged unless the codec can read probabilities in them.
 */
import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express';
import { ServingError } from './errors.js';
import { setDefenseRecord, type DefenseRecord } from './logger.js';
import { metricsHandler, type ServingMetrics } from './metrics.js';
import { resolveServingOptions, selectDefense, type ServingOptions } from './options.js';
import { createPerturber, SKIPPED_LABEL, type Outcome } from './perturber.js';
import type { Defense } from '../defenses/index.js';
import { adminHandler } from './clients/admin.js';
import { ClientRefusal, type ClientGate, type ClientTicket } from './clients/gate.js';
import type { InputRows } from './protocols/index.js';
import { tierOf, type ShadowAttacker } from './shadow/index.js';

export interface PoisonPredictionsMiddleware extends RequestHandler {
  readonly metrics: ServingMetrics;
  /** Serves this instance's registry in the Prometheus format: app.get('/metrics', mw.metricsHandler). */
  readonly metricsHandler: RequestHandler;
  /** The default defense, as built from the options. */
  readonly defense: Defense;
  /** With clients: the gate (ready(), close(), suspicious()). */
  readonly clients?: ClientGate;
  /** With clients.admin: the admin route, e.g. app.get('/admin/clients', mw.adminHandler). */
  readonly adminHandler?: RequestHandler;
  /**
   * The request's model inputs as the surrogate sees them (base64 images decoded and preprocessed
   * as `inputs` declares, numeric tensors as sent), read once per request and shared with the
   * defense and the detectors: a route that feeds these rows to its model decodes nothing itself.
   * Rejects with a RequestFormatError (400, 413) for input the client got wrong. Treat the rows as
   * read-only: the defense reads the same array after the route answers.
   */
  inputsOf(req: Request): Promise<InputRows>;
  /**
   * Express error handler for this middleware's own errors (a bad image or body found by
   * `inputsOf`, an overloaded queue, a refused client): answered in the protocol's JSON, with the
   * status and metrics the middleware would give, no stack. Other errors go to the next handler.
   * Mount it after the routes: app.use(mw.errorHandler).
   */
  readonly errorHandler: ErrorRequestHandler;
  /** With the `shadow` option: the shadow attacker (runRound(), held(), close()). */
  readonly shadow?: ShadowAttacker;
}

const NO_BODY_STATUS = new Set([204, 304]);

export function poisonPredictions(options: ServingOptions<Request>): PoisonPredictionsMiddleware {
  const resolved = resolveServingOptions(options);
  const perturber = createPerturber({
    codec: resolved.codec,
    metrics: resolved.metrics,
    onFailure: resolved.onFailure,
    inputFormat: resolved.inputFormat,
    context: resolved.context,
    answerErrorStatus: 500,
  });
  const { logger } = resolved;

  const gate = resolved.clients;

  // One read per request, whoever asks first (the route, the detectors, the defense): decoding an
  // image costs milliseconds, and twice that when several parts need it.
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

  /** The ticket's observer: the client's observation, then the defense its assessment names. */
  const observerFor = (req: Request, ticket: ClientTicket) => async (probs: Parameters<ClientGate['observe']>[1]) => {
    let inputs: InputRows | undefined;
    if (gate!.requiresInputs && req.body === undefined)
      throw new ServingError('client detection needs the request body: mount express.json() before poisonPredictions', 500, 'defense_failed');
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
  // The defense chosen for a request before its observation (null: skipped), for the gate's fail mode.
  const currentChoice = new WeakMap<Request, Defense | null>();

  const defendResponse = function defendResponse(req: Request, res: Response, next: NextFunction, ticket?: ClientTicket): void {
    const originalJson = res.json;
    const originalSend = res.send;
    const originalWrite = res.write;
    const originalEnd = res.end;
    // Once set, every call goes straight to Express: our own output, or an answer already handled.
    let handled = false;
    const buffered: Buffer[] = [];

    const emit = (outcome: Outcome): void => {
      setDefenseRecord(res, outcome.record);
      logRecord(outcome.record);
      if (res.headersSent) {
        // The route already flushed headers (e.g. a Content-Length for the original body): the defended
        // body cannot be sent in their frame, so the connection is cut rather than leak the original.
        res.destroy();
        return;
      }
      const refusalHeaders = clientHeaders.get(res);
      if (refusalHeaders) res.set(refusalHeaders);
      res.status(outcome.status);
      if (outcome.headers) res.set(outcome.headers);
      if (outcome.answered) toShadow(req, res, outcome.answered);
      originalJson.call(res, outcome.body);
    };

    const logRecord = (record: DefenseRecord): void => {
      if (!logger) return;
      const level =
        record.outcome === 'defended' || record.outcome === 'undefended' || record.outcome === 'passed_error' || record.outcome === 'fallback_argmax'
          ? 'info'
          : 'warn';
      logger[level]({ ...record, method: req.method, url: req.originalUrl }, 'model answer');
    };

    /** Defends one answer body (a parsed object, or text that must be JSON). */
    const handle = (body: unknown, isText: boolean): void => {
      handled = true;
      let defense: Defense | null;
      try {
        defense = selectDefense(resolved, req);
      } catch (error) {
        emit(perturber.failure(resolved.defense.spec, error));
        return;
      }
      if (NO_BODY_STATUS.has(res.statusCode) || req.method === 'HEAD') {
        (originalEnd as () => Response).call(res);
        return;
      }
      let parsed = body;
      if (isText) {
        try {
          parsed = JSON.parse(body as string);
        } catch {
          parsed = undefined;
        }
      }
      const label = defense ? defense.spec : SKIPPED_LABEL;
      if (res.statusCode >= 400) {
        if (parsed === undefined) {
          // A non-JSON error page: no codec could find probabilities in it.
          originalSend.call(res, body);
          return;
        }
        emit(perturber.screenErrorAnswer(label, res.statusCode, parsed));
        return;
      }
      if (defense && defense.needs.length > 0 && req.body === undefined) {
        emit(
          perturber.failure(
            label,
            new ServingError('the defense needs the request body: mount express.json() before poisonPredictions', 500, 'defense_failed'),
          ),
        );
        return;
      }
      currentChoice.set(req, defense);
      const observer = ticket ? observerFor(req, ticket) : undefined;
      const observed = observer
        ? (probs: Parameters<typeof observer>[0]) =>
            observer(probs).catch((error: unknown) => {
              if (error instanceof ClientRefusal) clientHeaders.set(res, error.headers);
              throw error;
            })
        : undefined;
      const result = perturber.perturb(defense, () => readInputs(req), parsed, observed);
      if (result instanceof Promise) result.then(emit, (error: unknown) => emit(perturber.failure(label, error)));
      else emit(result);
    };

    // The surrogate's queue is full: refuse (503, Retry-After) before the route spends work on the request.
    if (resolved.context?.admit && !resolved.chooseDefense && resolved.defense.needs.length > 0) {
      try {
        resolved.context.admit(1);
      } catch (error) {
        handled = true;
        emit(perturber.failure(resolved.defense.spec, error));
        return;
      }
    }

    res.json = function json(body?: unknown): Response {
      if (handled) return originalJson.call(res, body);
      handle(body, false);
      return res;
    };
    res.send = function send(body?: unknown): Response {
      if (handled) return originalSend.call(res, body);
      if (Buffer.isBuffer(body)) handle(body.toString('utf8'), true);
      else if (typeof body === 'string') handle(body, true);
      else handle(body, false);
      return res;
    };
    // Routes that write raw bytes: held back until end(), then defended like a JSON string.
    const hold = (chunk: unknown, rest: unknown[]): void => {
      if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
      buffered.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk), typeof rest[0] === 'string' ? (rest[0] as BufferEncoding) : 'utf8'));
    };
    const callbackIn = (args: unknown[]): (() => void) | undefined => args.find((a): a is () => void => typeof a === 'function');
    res.write = function write(chunk: unknown, ...rest: unknown[]): boolean {
      if (handled) return (originalWrite as (...args: unknown[]) => boolean).call(res, chunk, ...rest);
      hold(chunk, rest);
      const callback = callbackIn(rest);
      if (callback) process.nextTick(callback);
      return true;
    } as Response['write'];
    res.end = function end(chunk?: unknown, ...rest: unknown[]): Response {
      if (handled) return (originalEnd as (...args: unknown[]) => Response).call(res, chunk, ...rest);
      hold(chunk, rest);
      const callback = callbackIn([chunk, ...rest]);
      if (callback) res.once('finish', callback);
      if (buffered.length === 0 && (NO_BODY_STATUS.has(res.statusCode) || req.method === 'HEAD')) {
        handled = true;
        return (originalEnd as () => Response).call(res);
      }
      handle(Buffer.concat(buffered).toString('utf8'), true);
      return res;
    } as Response['end'];
    finishers.set(req, (outcome) => {
      handled = true;
      emit(outcome);
    });
    next();
  };

  const shadow = resolved.shadow;
  /** A drawn request goes to the shadow once its answer has been sent (the response's 'finish'), never before. */
  const toShadow = (req: Request, res: Response, answered: NonNullable<Outcome['answered']>): void => {
    if (!shadow?.draw()) return;
    const tier = tierOf(answered.defense, resolved.defense, resolved.tiers);
    if (tier === undefined) return;
    res.once('finish', () => shadow.offer({ tier, original: answered.original, defended: answered.defended, inputs: () => readInputs(req) }));
  };

  /** Per defended request: answers it with an outcome, past the response patches (the error handler's way out). */
  const finishers = new WeakMap<Request, (outcome: Outcome) => void>();

  const errorHandler: ErrorRequestHandler = (error: unknown, req: Request, res: Response, next: NextFunction): void => {
    if (!(error instanceof ServingError) || res.headersSent) {
      next(error);
      return;
    }
    const outcome = perturber.failure(resolved.defense.spec, error);
    const finish = finishers.get(req);
    if (finish) {
      finish(outcome);
      return;
    }
    setDefenseRecord(res, outcome.record);
    if (outcome.headers) res.set(outcome.headers);
    res.status(outcome.status).json(outcome.body);
  };

  // Headers (Retry-After) of a refusal reached on a response's own observation.
  const clientHeaders = new WeakMap<Response, Readonly<Record<string, string>>>();

  const middleware = function poisonPredictionsMiddleware(req: Request, res: Response, next: NextFunction): void {
    if (!gate) {
      defendResponse(req, res, next);
      return;
    }
    // Admission before the route runs: a refused or throttled client costs no model work.
    const admitted = gate.admit(req).then(async (ticket) => {
      // Inputs a detector needs but cannot read: refused before the route spends model work on them.
      if (gate.requiresInputs && req.body !== undefined) {
        try {
          await readInputs(req);
        } catch (error) {
          throw gate.unreadableInputs(error);
        }
      }
      return ticket;
    });
    admitted.then(
      (ticket) => defendResponse(req, res, next, ticket),
      (error: unknown) => {
        const outcome = perturber.failure(resolved.defense.spec, error);
        setDefenseRecord(res, outcome.record);
        if (error instanceof ClientRefusal) res.set(error.headers);
        res.status(outcome.status).json(outcome.body);
      },
    );
  } as PoisonPredictionsMiddleware;

  const serveMetrics = metricsHandler(resolved.metrics.registry);
  Object.defineProperties(middleware, {
    metrics: { value: resolved.metrics, enumerable: true },
    metricsHandler: { value: ((req: Request, res: Response) => serveMetrics(req, res)) as RequestHandler, enumerable: true },
    defense: { value: resolved.defense, enumerable: true },
    clients: { value: gate, enumerable: true },
    adminHandler: {
      value: gate && resolved.clientsAdmin ? (adminHandler(gate, resolved.clientsAdmin) as unknown as RequestHandler) : undefined,
      enumerable: true,
    },
    inputsOf: { value: inputsOf, enumerable: true },
    errorHandler: { value: errorHandler, enumerable: true },
    shadow: { value: shadow, enumerable: true },
  });
  return middleware;
}
