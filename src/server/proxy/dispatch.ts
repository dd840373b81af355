/**
 * Where each request goes, in order: a request whose framing is in doubt is refused (400, connection
 * closed) before anything else; then the proxy's own routes (liveness, readiness, metrics, clients
 * admin); while draining, 503; then the route table: refused, passed through, or inference (after
 * the client gate's admission, so a refused client costs no model work).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Defense } from '../../defenses/index.js';
import { adminHandler, DEFAULT_ADMIN_PATH } from '../clients/admin.js';
import type { ClientTicket } from '../clients/gate.js';
import { RequestFormatError, ServingError } from '../errors.js';
import { metricsHandler } from '../metrics.js';
import { selectDefense } from '../options.js';
import { SKIPPED_LABEL } from '../perturber.js';
import type { ProxyAnswers } from './answer.js';
import { framingDoubt } from './bodies.js';
import type { Health } from './health.js';
import type { InferenceRoute } from './inference.js';
import { guardedMetrics } from './metrics-access.js';
import type { ResolvedProxyOptions } from './options.js';
import type { PassThroughRoute } from './pass-through.js';
import type { RouteDecision } from './routes.js';

export interface DispatchDeps {
  options: ResolvedProxyOptions;
  /** Where /metrics gets its text (default: the serving metrics' registry). */
  metricsText?: () => Promise<string>;
  routes: (method: string, path: string) => RouteDecision;
  health: Health;
  answers: ProxyAnswers;
  passThrough: PassThroughRoute;
  infer: InferenceRoute;
  isDraining(): boolean;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** The proxy's own routes (health, metrics, admin) by path, for GET/HEAD or (admin) any method; undefined: not one of them. */
function ownRoutes(deps: DispatchDeps): (method: string, pathname: string) => Handler | undefined {
  const { serving, livePath, readyPath, metricsPath } = deps.options;
  const { health } = deps;
  const serveMetrics = guardedMetrics(metricsHandler(serving.metrics.registry, deps.metricsText), deps.options.metricsAccess);
  const gate = serving.clients;
  const adminPath = gate && serving.clientsAdmin ? (serving.clientsAdmin.path ?? DEFAULT_ADMIN_PATH) : undefined;
  const serveAdmin = gate && serving.clientsAdmin ? adminHandler(gate, serving.clientsAdmin) : undefined;
  return (method, pathname) => {
    const read = method === 'GET' || method === 'HEAD';
    if (read && pathname === livePath) return health.live;
    if (read && pathname === readyPath) return health.ready;
    if (metricsPath !== false && pathname === metricsPath && read) return serveMetrics;
    if (adminPath !== undefined && pathname === adminPath)
      return (req, res) => {
        req.resume();
        serveAdmin!(req, res);
      };
    return undefined;
  };
}

export function createDispatch(deps: DispatchDeps): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const { serving } = deps.options;
  const { answers, routes } = deps;
  const gate = serving.clients;
  const ownRoute = ownRoutes(deps);
  /** Answers `error` without reading the request's body. */
  const refuse = (req: IncomingMessage, res: ServerResponse, label: string, error: unknown): void => {
    req.resume();
    answers.fail(res, label, error);
  };

  return async (req, res) => {
    const method = req.method ?? 'GET';
    // An absolute-form target ("http://host/...") matches no route: refused, or passed (--pass-unknown-routes)
    // only when its path, like any passed path, reads as no defended route (routes.ts).
    const path = req.url ?? '/';
    const query = path.indexOf('?');
    const pathname = query < 0 ? path : path.slice(0, query);
    // First of all: a request whose framing is in doubt is answered 400 and its connection closed
    // (what else the client sent on it cannot be trusted to be framed as the proxy read it).
    const doubt = framingDoubt(method, req.headers);
    if (doubt !== undefined) {
      res.setHeader('connection', 'close');
      refuse(req, res, serving.defense.spec, new RequestFormatError(`request: ${doubt}`));
      return;
    }
    const own = ownRoute(method, pathname);
    if (own) return own(req, res);
    if (deps.isDraining()) {
      res.setHeader('connection', 'close');
      refuse(req, res, serving.defense.spec, new ServingError('the proxy is shutting down; retry on another instance', 503, 'draining'));
      return;
    }
    let defense: Defense | null;
    try {
      defense = selectDefense(serving, req);
    } catch (error) {
      refuse(req, res, serving.defense.spec, error);
      return;
    }
    const label = defense ? defense.spec : SKIPPED_LABEL;
    const decision = routes(method, pathname);
    if (decision.kind === 'refuse') {
      refuse(req, res, label, new ServingError(decision.message, decision.status, decision.status === 404 ? 'not_found' : 'bad_request'));
      return;
    }
    if (decision.kind === 'pass') {
      await deps.passThrough(req, res, path, label);
      return;
    }
    let ticket: ClientTicket | undefined;
    if (gate) {
      // Admission before the body is read or anything is forwarded: a refused client costs no model work.
      try {
        ticket = await gate.admit(req);
      } catch (error) {
        // A refusal (403/429/401/503) carries its Retry-After in the outcome's headers.
        refuse(req, res, label, error);
        return;
      }
    }
    await deps.infer(req, res, path, defense, label, ticket);
  };
}
