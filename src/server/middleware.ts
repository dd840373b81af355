/**
 * Mount mode: `poisonPredictions(options)` returns Express (5 or 4) middleware that defends the
 * JSON a route sends, without the route changing a line. It wraps res.json, res.send and, for
 * routes that write raw bytes, res.write/res.end, so no path leaves the original probabilities out.
 *
 * Error answers (status >= 400) pass unchanged unless the codec can read probabilities in them, or
 * the route had begun its answer with res.write (then only the codec's error body goes out).
 * The patching itself is in middleware/response-patch.ts, the once-per-request input reading in
 * middleware/inputs.ts.
 */
import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express';
import { ServingError } from './errors.js';
import { setDefenseRecord } from './logger.js';
import { metricsHandler, type ServingMetrics } from './metrics.js';
import { createInputReader, unparsedBody } from './middleware/inputs.js';
import { createResponsePatch } from './middleware/response-patch.js';
import { resolveServingOptions, type ServingOptions } from './options.js';
import { createPerturber, type Outcome } from './perturber.js';
import type { Defense } from '../defenses/index.js';
import { adminHandler } from './clients/admin.js';
import type { ClientGate } from './clients/gate.js';
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
   * Rejects with a RequestFormatError (400, 413; 415 for a body that is not JSON) for input the
   * client got wrong, a 500 ServingError when express.json() is not mounted. Treat the rows as
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
  const gate = resolved.clients;
  const { readInputs, inputsOf } = createInputReader(resolved);

  const shadow = resolved.shadow;
  /** A drawn request goes to the shadow once its answer has been sent (the response's 'finish'), never before. */
  const toShadow = (req: Request, res: Response, answered: NonNullable<Outcome['answered']>): void => {
    if (!shadow?.draw()) return;
    const tier = tierOf(answered.defense, resolved.defense, resolved.tiers);
    if (tier === undefined) return;
    res.once('finish', () => shadow.offer({ tier, original: answered.original, defended: answered.defended, inputs: () => readInputs(req) }));
  };
  const { defendResponse, finish } = createResponsePatch({ resolved, perturber, readInputs, toShadow });

  /** An answer of the middleware's own, outside the patches: its outcome's status, headers (Retry-After) and body. */
  const answer = (res: Response, outcome: Outcome): void => {
    setDefenseRecord(res, outcome.record);
    if (outcome.headers) res.set(outcome.headers);
    res.status(outcome.status).json(outcome.body);
  };

  const errorHandler: ErrorRequestHandler = (error: unknown, req: Request, res: Response, next: NextFunction): void => {
    if (!(error instanceof ServingError) || res.headersSent) {
      next(error);
      return;
    }
    const outcome = perturber.failure(resolved.defense.spec, error);
    if (!finish(req, outcome)) answer(res, outcome);
  };

  const middleware = function poisonPredictionsMiddleware(req: Request, res: Response, next: NextFunction): void {
    if (!gate) {
      defendResponse(req, res, next);
      return;
    }
    // Admission before the route runs: a refused or throttled client costs no model work.
    const admitted = gate.admit(req).then(async (ticket) => {
      // Inputs a detector needs but cannot read: refused before the route spends model work on them.
      // A body no JSON parser read is answered as such (400, 415; 500 with no parser mounted), not as unreadable inputs.
      if (gate.requiresInputs) {
        const unparsed = unparsedBody(req, 'client detection');
        if (unparsed) throw unparsed;
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
      (error: unknown) => answer(res, perturber.failure(resolved.defense.spec, error)),
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
