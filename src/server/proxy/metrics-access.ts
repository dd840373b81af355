/**
 * Who may read the proxy's /metrics. The metrics show, request by request, how answers were changed
 * (top-1 changes, the perturbation's size, client actions and alarms): a thief who reads them between
 * its own queries learns what the defense hid and whether it is suspected. So /metrics needs a bearer
 * token (metricsToken), or metricsPublic for a port that clients cannot reach; without either it
 * answers 403, saying what to set.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { bearerCheck, sendJson } from '../clients/admin.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export interface MetricsAccess {
  /** The bearer token Prometheus sends (`authorization: { credentials_file: … }` in its scrape config). */
  token?: string;
  /** Served to anyone who reaches the port. */
  public: boolean;
}

const refuse = (res: ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void =>
  sendJson(res, status, { error: message }, headers);

/** `serve` behind the access rule. */
export function guardedMetrics(serve: Handler, access: MetricsAccess): Handler {
  if (access.public) return serve;
  if (access.token === undefined)
    return (_req, res) =>
      refuse(
        res,
        403,
        'the metrics are not served to clients: set metricsToken (msd proxy --metrics-token-env VAR) and scrape with that bearer token, or metricsPublic (--metrics-public) on a port clients cannot reach',
      );
  const authorized = bearerCheck(access.token);
  return (req, res) => {
    if (authorized(req)) serve(req, res);
    else refuse(res, 401, 'the metrics need Authorization: Bearer <metrics token>', { 'www-authenticate': 'Bearer' });
  };
}
