import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { runCli } from '../../helpers/run-cli.js';
import { assertNoOriginalNumbers } from '../helpers/fixtures.js';
import { startRedis, type TestRedis } from '../helpers/redis-server.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';
import { startProxyCommand } from '../helpers/proxy-command.js';

// Every stub answer has top probability ≤ 0.72: with a 0.8 confidence threshold all are "unsure", so OOD flags after 4 queries.
const DETECTION = JSON.stringify({
  ood: { minQueries: 4, confidenceThreshold: 0.8 },
  prada: { enabled: false },
  policy: { steps: ['argmax', 'refuse'], stepQueries: 4 },
});
const PREDICT = '/v1/models/mnist:predict';
const BODY = {
  instances: [
    [1, 2],
    [3, 4],
  ],
};

describe('msd proxy with client detection', () => {
  let upstream: StubUpstream;
  let redis: TestRedis;
  before(async () => {
    upstream = await startStubUpstream('tf-serving');
    redis = await startRedis();
  });
  after(async () => {
    await upstream.close();
    await redis.stop();
  });

  it('escalates, then refuses a client flagged by OOD, through Redis, while another client keeps the default', async () => {
    const { url, stop, waitFor } = await startProxyCommand([
      '--upstream',
      upstream.url,
      '--protocol',
      'tf-serving',
      '--defense',
      'rounding:decimals=1',
      '--client-id',
      'header:x-api-key',
      '--redis',
      redis.url,
      '--detection',
      DETECTION,
    ]);
    try {
      assert.match(await waitFor(/client detection/), /client detection by header:x-api-key \(Redis store\), escalation argmax \(argmax\) → refuse/);
      const thief = () => request(url).post(PREDICT).set('x-api-key', 'thief').send(BODY);
      const first = await thief().expect(200);
      assert.deepEqual(
        first.body,
        {
          predictions: [
            [0.7, 0.2, 0.1],
            [0.1, 0.7, 0.2],
          ],
        },
        'the default defense before any flag',
      );
      const second = await thief().expect(200);
      assert.deepEqual(
        second.body,
        {
          predictions: [
            [1, 0, 0],
            [0, 1, 0],
          ],
        },
        'the query that crosses the threshold is answered by the argmax tier',
      );
      assertNoOriginalNumbers(second.text);
      await thief().expect(200);
      const refused = await thief().expect(403);
      assertNoOriginalNumbers(refused.text);
      await thief().expect(403);
      const honest = await request(url).post(PREDICT).set('x-api-key', 'honest').send(BODY).expect(200);
      assert.deepEqual(honest.body.predictions[0], [0.7, 0.2, 0.1]);
    } finally {
      assert.equal(await stop(), 0);
    }
  });

  it('without a surrogate picks a ladder that needs none and says so; refuses unknown tiers and MAD tiers without a surrogate', async () => {
    const { stop, waitFor } = await startProxyCommand(['--upstream', upstream.url, '--protocol', 'tf-serving', '--defense', 'argmax', '--client-id', 'ip']);
    try {
      assert.match(await waitFor(/escalation/), /escalation reverse-sigmoid \(reverse-sigmoid:beta=0\.7,gamma=0\.2\) → argmax \(argmax\); no --surrogate/);
    } finally {
      await stop();
    }
    const base = ['proxy', '--upstream', upstream.url, '--protocol', 'tf-serving', '--client-id', 'ip'];
    const unknown = runCli([...base, '--detection', '{"policy":{"steps":["strong"]}}']);
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /policy step "strong" names no tier: add --tier strong=SPEC/);
    const mad = runCli([...base, '--tier', 'mad-argmax=mad-argmax:eps=0.8']);
    assert.equal(mad.status, 2);
    assert.match(mad.stderr, /tier "mad-argmax" \(mad-argmax:eps=0.8\) needs a surrogate model: pass --surrogate PATH/);
    const badOptions = runCli([...base, '--detection', '{"prada":{"delta":7}}']);
    assert.equal(badOptions.status, 2);
    assert.match(badOptions.stderr, /--detection: detection option prada.delta must be/);
    const workers = runCli([...base, '--workers', '2']);
    assert.equal(workers.status, 2);
    assert.match(workers.stderr, /--workers 2 with --client-id needs --redis URL/);
    const stray = runCli(['proxy', '--upstream', upstream.url, '--tier', 'a=argmax']);
    assert.equal(stray.status, 2);
    assert.match(stray.stderr, /need --client-id/);
  });
});
