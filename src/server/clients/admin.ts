/**
 * The admin route: the most suspicious clients with their evidence, by hashed id; with cohorts, the
 * cohorts (flagged first); with population detection, each view's alarm and evidence. Off unless
 * clients.admin is given; behind its own bearer token, compared in constant time (the digests of
 * both sides are compared, so neither the token nor its length leaks through timing).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ClientGate } from './gate.js';

export const DEFAULT_ADMIN_PATH = '/admin/clients';

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/** Whether a request carries `Authorization: Bearer <token>`, compared in constant time (digests of both sides). */
export function bearerCheck(token: string): (req: IncomingMessage) => boolean {
  const expected = digest(token);
  return (req) => {
    // The scheme's name is case-insensitive (RFC 9110).
    const match = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization ?? '').trim());
    return match !== null && timingSafeEqual(digest(match[1]), expected);
  };
}

/** A small JSON answer of the server's own routes (admin, metrics refusals), never cached. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function adminHandler(gate: ClientGate, admin: { token: string; limit?: number }): (req: IncomingMessage, res: ServerResponse) => void {
  const authorized = bearerCheck(admin.token);
  const limit = admin.limit ?? 50;
  return (req, res) => {
    if (!authorized(req)) {
      sendJson(res, 401, { error: 'the admin route needs Authorization: Bearer <admin token>' }, { 'www-authenticate': 'Bearer' });
      return;
    }
    if (req.method !== 'GET') {
      sendJson(res, 405, { error: 'use GET' }, { allow: 'GET' });
      return;
    }
    gate.overview(limit).then(
      (overview) => sendJson(res, 200, { store: gate.store, ...overview }),
      (error: Error) => sendJson(res, 503, { error: `client store: ${error.message}` }),
    );
  };
}
