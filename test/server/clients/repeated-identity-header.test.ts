/**
 * A header that names the client (or its cohort), sent more than once. Node joins repeated x-* headers
 * ("VALID, rnd-1"), so reading the joined value would give a fresh identity per request to a client
 * whose auth in front checked one copy only. These run over real sockets: the copies are only visible
 * in what Node parsed from the wire.
 */
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import { createCohortReader } from '../../../src/server/clients/above/cohort.js';
import { createIdentifier } from '../../../src/server/clients/identity.js';
import { RequestFormatError } from '../../../src/server/errors.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { countDetection } from '../helpers/count-detection.js';
import { assertNoOriginalNumbers, kserveAnswer, kserveRequest } from '../helpers/fixtures.js';

const jwt = (claims: object): string =>
  `Bearer ${Buffer.from('{"alg":"HS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2lnbmF0dXJl`;

/** Header values; an array goes as that many lines (Node's typings allow one Authorization only). */
type HeaderLines = Record<string, string | string[]>;

/** Sends one request with these headers (an array value goes as that many header lines). */
function send(port: number, headers: HeaderLines, body?: string, path = '/'): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: body === undefined ? 'GET' : 'POST', headers: headers as OutgoingHttpHeaders }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('a repeated identity header', () => {
  // Each request is answered with what the reader under test made of it: 200 and the id, or the error's status.
  let read: (req: IncomingMessage) => string | undefined = () => undefined;
  const server = createServer((req, res) => {
    try {
      res.end(JSON.stringify({ id: read(req) ?? null }));
    } catch (error) {
      res.statusCode = error instanceof RequestFormatError ? error.status : 500;
      res.end((error as Error).message);
    }
  });
  let port = 0;
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('"header:NAME": two copies are refused (400, naming the header), never read as a combined identity', async () => {
    const identify = createIdentifier({ identity: 'header:x-api-key' });
    read = (req) => identify(req).id;
    const alone = await send(port, { 'x-api-key': 'VALID' });
    assert.equal(alone.status, 200);
    for (const copies of [
      ['VALID', 'rnd-1'],
      ['VALID', 'VALID'],
      ['rnd-2', 'VALID', 'rnd-3'],
    ]) {
      const answer = await send(port, { 'x-api-key': copies });
      assert.equal(answer.status, 400, copies.join(' + '));
      assert.match(answer.text, new RegExp(`^request: the x-api-key header appears ${copies.length} times; send it once`));
      assert.ok(!answer.text.includes('VALID') && !answer.text.includes('rnd'), 'the values are not echoed');
    }
    // One header whose value holds a comma is one value, as before.
    assert.equal((await send(port, { 'x-api-key': 'VALID, rnd-1' })).status, 200);
  });

  it('"jwt:CLAIM": two Authorization headers are refused (Node keeps the first; the auth in front may have checked another)', async () => {
    const identify = createIdentifier({ identity: 'jwt:sub' });
    read = (req) => identify(req).id;
    assert.equal((await send(port, { authorization: jwt({ sub: 'alice' }) })).status, 200);
    const twice = await send(port, { authorization: [jwt({ sub: 'rnd-1' }), jwt({ sub: 'alice' })] });
    assert.equal(twice.status, 400);
    assert.match(twice.text, /the authorization header appears 2 times/);
  });

  it('cohort "header:NAME" and "jwt:CLAIM": two copies are refused, so a client cannot leave its cohort with a second one', async () => {
    const tenant = createCohortReader({ cohort: 'header:x-tenant-id' });
    read = (req) => tenant(req, undefined);
    assert.equal((await send(port, { 'x-tenant-id': 'acme' })).status, 200);
    const twice = await send(port, { 'x-tenant-id': ['acme', 'rnd-1'] });
    assert.equal(twice.status, 400);
    assert.match(twice.text, /the x-tenant-id header appears 2 times/);
    const org = createCohortReader({ cohort: 'jwt:org' });
    read = (req) => org(req, undefined);
    assert.equal((await send(port, { authorization: [jwt({ org: 'acme' }), jwt({ org: 'rnd-1' })] })).status, 400);
  });

  it('through the middleware: 400 before the route runs, and no probabilities in the answer', async () => {
    const app = express();
    app.use(express.json());
    let modelCalls = 0;
    const guard = poisonPredictions({
      defense: 'rounding:decimals=2',
      tiers: { argmax: 'argmax' },
      clients: { identity: 'header:x-api-key', detection: countDetection({}), cohort: 'header:x-tenant-id', probationTier: 'argmax' },
    });
    app.post('/v2/models/mnist/infer', guard, (_req, res) => {
      modelCalls++;
      res.json(kserveAnswer());
    });
    const listening = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => listening.once('listening', resolve));
    try {
      const appPort = (listening.address() as AddressInfo).port;
      const body = JSON.stringify(kserveRequest());
      const ask = (headers: HeaderLines) => send(appPort, { 'content-type': 'application/json', ...headers }, body, '/v2/models/mnist/infer');
      assert.equal((await ask({ 'x-api-key': 'VALID', 'x-tenant-id': 'acme' })).status, 200);
      const repeated: HeaderLines[] = [
        { 'x-api-key': ['VALID', 'rnd-1'], 'x-tenant-id': 'acme' },
        { 'x-api-key': 'VALID', 'x-tenant-id': ['acme', 'rnd-1'] },
      ];
      for (const headers of repeated) {
        const refused = await ask(headers);
        assert.equal(refused.status, 400, JSON.stringify(headers));
        assert.match(JSON.parse(refused.text).error, /header appears 2 times; send it once/);
        assertNoOriginalNumbers(refused.text);
      }
      assert.equal(modelCalls, 1, 'the route (model work) ran for the accepted request only');
    } finally {
      await new Promise<void>((resolve) => listening.close(() => resolve()));
      await guard.clients?.close();
    }
  });
});
