import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import express, { type Request } from 'express';
import request from 'supertest';
import { createLogger } from '../../../src/server/logger.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import type { ServingOptions } from '../../../src/server/options.js';
import { ServingOptionError } from '../../../src/server/errors.js';
import { countDetection, type CountPolicy } from '../helpers/count-detection.js';
import { assertNoOriginalNumbers, kserveAnswer, kserveRequest, lineCollector, ORIGINAL_ROWS } from '../helpers/fixtures.js';

const ADMIN_TOKEN = 'admin-token-0123456789';
const PATH = '/v2/models/mnist/infer';
const dataOf = (body: { outputs: { data: number[] }[] }) => body.outputs[0].data;
const ROUNDED = [0.71, 0.2, 0.09, 0.14, 0.64, 0.22];
const ARGMAX = [1, 0, 0, 0, 1, 0];

function appWith(policy: CountPolicy, clients: Partial<NonNullable<ServingOptions<Request>['clients']>> = {}, extra: Partial<ServingOptions<Request>> = {}) {
  const detection = countDetection(policy);
  const logs = lineCollector();
  const app = express();
  app.use(express.json());
  const guard = poisonPredictions({
    defense: 'rounding:decimals=2',
    tiers: { argmax: 'argmax' },
    logger: createLogger({ level: 'info' }, logs.stream),
    clients: { identity: 'header:x-api-key', detection, ...clients },
    ...extra,
  });
  let modelCalls = 0;
  app.post(PATH, guard, (_req, res) => {
    modelCalls++;
    res.json(kserveAnswer());
  });
  app.get('/metrics', guard.metricsHandler);
  if (guard.adminHandler) app.get('/admin/clients', guard.adminHandler);
  return { app, guard, detection, logs, calls: () => modelCalls };
}

const ask = (app: express.Express, key?: string) => {
  const r = request(app).post(PATH);
  if (key) r.set('x-api-key', key);
  return r.send(kserveRequest());
};

describe('client detection through the middleware', () => {
  it('observes the original probabilities and the preprocessed inputs of each answer', async () => {
    const { app, detection } = appWith({});
    await ask(app, 'key-alice-0001').expect(200);
    const seen = detection.observed[0];
    assert.deepEqual(
      Array.from(seen.probs.data, (v) => Math.round(v * 1e6) / 1e6),
      ORIGINAL_ROWS.flat().map((v) => Math.round(v * 1e6) / 1e6),
    );
    assert.equal(seen.inputs?.rows, 2);
    assert.equal(seen.inputs?.cols, 4);
  });

  it('escalates the flagged client to the tier defense from the answer that crosses the threshold, and that client only', async () => {
    const { app } = appWith({ escalateAt: 3, tier: 'argmax' });
    for (let i = 0; i < 2; i++) assert.deepEqual(dataOf((await ask(app, 'key-alice-0001').expect(200)).body), ROUNDED);
    const third = await ask(app, 'key-alice-0001').expect(200);
    assert.deepEqual(dataOf(third.body), ARGMAX);
    assert.deepEqual(dataOf((await ask(app, 'key-alice-0001').expect(200)).body), ARGMAX);
    assert.deepEqual(dataOf((await ask(app, 'key-bob-000002').expect(200)).body), ROUNDED, 'another client keeps the default defense');
  });

  it('throttles with 429 and Retry-After before the route runs', async () => {
    const { app, calls } = appWith({ throttleAt: 2, retryAfterSeconds: 7 });
    await ask(app, 'key-alice-0001').expect(200);
    const crossing = await ask(app, 'key-alice-0001').expect(429);
    assert.equal(crossing.headers['retry-after'], '7');
    assertNoOriginalNumbers(crossing.text);
    const before = calls();
    const res = await ask(app, 'key-alice-0001').expect(429);
    assert.equal(res.headers['retry-after'], '7');
    assert.match(res.body.error, /throttled/);
    assert.equal(calls(), before, 'the route (model work) did not run');
  });

  it('refuses with 403 before the route runs, and logs the change without the raw key', async () => {
    const { app, calls, logs, guard } = appWith({ refuseAt: 2 });
    await ask(app, 'key-alice-secret-77').expect(200);
    await ask(app, 'key-alice-secret-77').expect(403);
    const before = calls();
    const res = await ask(app, 'key-alice-secret-77').expect(403);
    assertNoOriginalNumbers(res.text);
    assert.equal(calls(), before);
    const change = logs.lines.find((l) => l.msg === 'client action changed');
    assert.ok(change, 'the change of action is logged');
    assert.equal(change.action, 'refuse');
    assert.match(String(change.client), /^[0-9a-f]{32}$/);
    assert.deepEqual((change.evidence as Record<string, { queries: number }>).count.queries, 2);
    assert.ok(!logs.raw.join('').includes('key-alice-secret-77'), 'no raw client id in any log line');
    const metrics = await guard.metrics.registry.metrics();
    assert.match(metrics, /msd_client_actions_total\{action="refuse",detector="count"\} 2/);
    assert.match(metrics, /msd_client_action_changes_total\{action="refuse",detector="count"\} 1/);
    assert.match(metrics, /msd_detector_evaluations_total\{detector="count",flagged="true"\} 1/);
    assert.match(metrics, /msd_clients_by_action\{action="refuse"\} 1/);
    assert.match(metrics, /msd_requests_total\{defense="rounding:decimals=2",outcome="client_refused"\} 2/);
    assert.ok(!metrics.includes('key-alice') && !/client(_id)?="/.test(metrics), 'no client label in the metrics');
  });

  it('answers requests without identity as one anonymous class, or refuses them with 401', async () => {
    const allowed = appWith({ refuseAt: 3 });
    await ask(allowed.app).expect(200);
    await ask(allowed.app).expect(200);
    await ask(allowed.app).expect(403);
    const strict = appWith({}, { anonymous: 'refuse' });
    const res = await ask(strict.app).expect(401);
    assert.match(res.body.error, /identity is required/);
    assert.equal(strict.calls(), 0);
    await ask(strict.app, 'key-alice-0001').expect(200);
  });

  it('fails closed when the policy names a tier that is not configured', async () => {
    const { app } = appWith({ escalateAt: 1, tier: 'nope' });
    const res = await ask(app, 'key-alice-0001').expect(500);
    assertNoOriginalNumbers(res.text);
  });

  it('fails closed when the detection throws: an error, never the answer', async () => {
    const broken = {
      ...countDetection({}),
      observe: () => {
        throw new Error('detector bug');
      },
    };
    const { app } = appWith({}, { detection: broken });
    const res = await ask(app, 'key-alice-0001').expect(500);
    assertNoOriginalNumbers(res.text);
  });

  it('serves the admin route only when configured, behind its token, with hashed ids and evidence', async () => {
    const off = appWith({});
    assert.equal(off.guard.adminHandler, undefined);
    await request(off.app).get('/admin/clients').expect(404);
    const { app } = appWith({ escalateAt: 2, tier: 'argmax' }, { admin: { token: ADMIN_TOKEN } });
    for (let i = 0; i < 3; i++) await ask(app, 'key-alice-secret-77').expect(200);
    await ask(app, 'key-bob-secret-88').expect(200);
    await request(app).get('/admin/clients').expect(401);
    await request(app).get('/admin/clients').set('authorization', 'Bearer wrong-token-0123456789').expect(401);
    const res = await request(app).get('/admin/clients').set('authorization', `Bearer ${ADMIN_TOKEN}`).expect(200);
    assert.equal(res.body.clients.length, 2);
    const [first, second] = res.body.clients;
    assert.equal(first.action, 'escalate');
    assert.equal(first.verdicts[0].evidence.queries, 3);
    assert.equal(second.action, 'default');
    assert.match(first.id, /^[0-9a-f]{32}$/);
    assert.ok(!res.text.includes('secret'));
  });

  it('a route that answers again while its answer is being defended: the second answer never goes out', async () => {
    const answer = kserveAnswer();
    const routes: Record<string, (res: express.Response) => void> = {
      '/twice-json': (res) => {
        res.json(answer);
        res.json(answer);
      },
      '/json-then-end': (res) => {
        res.json(answer);
        res.end(JSON.stringify(answer));
      },
      '/json-then-write': (res) => {
        res.json(answer);
        res.write(JSON.stringify(answer));
        res.send(JSON.stringify(answer));
      },
    };
    // With client detection the defense is asynchronous (the observation awaits the store); without it, synchronous.
    for (const clients of [{ identity: 'header:x-api-key' as const, detection: countDetection({}) }, undefined]) {
      const logs = lineCollector();
      const app = express();
      app.use(express.json());
      const guard = poisonPredictions({
        defense: 'rounding:decimals=2',
        logger: createLogger({ level: 'info' }, logs.stream),
        ...(clients ? { clients } : {}),
      });
      for (const [path, route] of Object.entries(routes)) app.post(path, guard, (_req, res) => route(res));
      // Express's own error handler is quiet here: a second answer after the first went out throws, as it would unpatched.
      app.use((_error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        if (!res.headersSent) res.status(500).end();
      });
      for (const path of Object.keys(routes)) {
        const res = await request(app).post(path).set('x-api-key', 'key-twice-0001').send(kserveRequest());
        assert.equal(res.status, 200, `${path}: ${res.text}`);
        assertNoOriginalNumbers(res.text);
        assert.deepEqual(dataOf(JSON.parse(res.text)), ROUNDED, path);
      }
      if (clients) assert.equal(logs.lines.filter((l) => String(l.msg).includes('the second answer was dropped')).length, 3, 'one warning per request');
      await guard.clients?.close();
    }
  });

  it('rejects bad client options at construction with what to write instead', () => {
    const build = (clients: object) => () => poisonPredictions({ defense: 'argmax', clients } as ServingOptions<Request>);
    assert.throws(build({ identity: 'header:x-api-key' }), (e: Error) => e instanceof ServingOptionError && /ClientDetection/.test(e.message));
    assert.throws(build({ identity: 'header:x-api-key', detection: countDetection({}), failMode: 'open' }), /"local" or "refuse"/);
    assert.throws(build({ identity: 'header:x-api-key', detection: countDetection({}), admin: { token: 'short' } }), /at least 16/);
    assert.throws(build({ identity: 'header:x-api-key', detection: countDetection({}), escalationTier: 'mad' }), /not in tiers/);
    assert.throws(build({ identity: 'header:x-api-key', detection: countDetection({}), color: 1 }), /unknown clients option/);
    assert.throws(
      build({ identity: 'header:x-api-key', detection: countDetection({}), store: { memory: { maxClients: 0 } } }),
      /maxClients must be a positive integer/,
    );
    assert.throws(
      build({ identity: 'header:x-api-key', detection: countDetection({}), store: { redis: 'redis://x', ttlMs: -5 } }),
      /ttlMs must be a positive integer/,
    );
  });
});
