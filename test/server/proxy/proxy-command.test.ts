import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { createModel, initBackend, saveModel } from '../../../src/models/index.js';
import { runCli } from '../../helpers/run-cli.js';
import { assertNoOriginalNumbers, ORIGINAL_ROWS } from '../helpers/fixtures.js';
import { startProxyCommand } from '../helpers/proxy-command.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

describe('msd proxy', () => {
  let upstream: StubUpstream;
  before(async () => {
    upstream = await startStubUpstream('tf-serving');
  });
  after(async () => {
    await upstream.close();
  });

  it('serves the defended upstream, logs JSON lines, and exits 0 on SIGTERM', async () => {
    const { url, stop, stdout: output } = await startProxyCommand(['--upstream', upstream.url, '--protocol', 'tf-serving', '--defense', 'argmax']);
    try {
      const res = await request(url)
        .post('/v1/models/mnist:predict')
        .send({
          instances: [
            [1, 2],
            [3, 4],
          ],
        })
        .expect(200);
      assert.deepEqual(res.body, {
        predictions: [
          [1, 0, 0],
          [0, 1, 0],
        ],
      });
      assertNoOriginalNumbers(res.text);
    } finally {
      assert.equal(await stop(), 0);
    }
    const line = output()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.outcome === 'defended');
    assert.equal(line?.defense, 'argmax');
  });

  it('runs MAD with a saved surrogate given by --surrogate', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'msd-surrogate-'));
    try {
      await initBackend({ log: () => {} });
      const surrogate = createModel({ arch: 'mlp', inputShape: [2], classes: 3, seed: 4, hidden: [4] });
      await saveModel(surrogate, dir);
      surrogate.dispose();
      const { url, stop } = await startProxyCommand([
        '--upstream',
        upstream.url,
        '--protocol',
        'tf-serving',
        '--defense',
        'mad-argmax:eps=0.5',
        '--surrogate',
        dir,
        '--input-scale',
        '0.5',
        '--max-rows',
        '2',
        '--batch-window-ms',
        '1',
      ]);
      try {
        const res = await request(url)
          .post('/v1/models/mnist:predict')
          .send({
            instances: [
              [1, 2],
              [3, 4],
            ],
          })
          .expect(200);
        const rows = res.body.predictions as number[][];
        assert.equal(rows[0].indexOf(Math.max(...rows[0])), 0, 'MAD-argmax keeps the top-1 class');
        assert.equal(rows[1].indexOf(Math.max(...rows[1])), 1);
        const l1 = rows.flat().reduce((sum, v, i) => sum + Math.abs(v - ORIGINAL_ROWS.flat()[i]), 0);
        assert.ok(l1 > 0.1 && l1 <= 1 + 1e-4, `moved within 2 × eps: ${l1}`);
        const forwarded = upstream.requests.length;
        const tooMany = await request(url)
          .post('/v1/models/mnist:predict')
          .send({
            instances: [
              [1, 2],
              [3, 4],
              [5, 6],
            ],
          })
          .expect(413);
        assert.match(tooMany.body.error, /at most 2 per request/);
        assert.equal(upstream.requests.length, forwarded, 'refused before forwarding');
      } finally {
        assert.equal(await stop('SIGINT'), 0, 'a first Ctrl-C closes cleanly');
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('exits 2 with a clear message on a bad defense or protocol, or MAD without a surrogate', () => {
    const noSurrogate = runCli(['proxy', '--upstream', upstream.url, '--defense', 'mad:eps=0.5']);
    assert.equal(noSurrogate.status, 2);
    assert.match(noSurrogate.stderr, /needs a surrogate model: pass --surrogate PATH .*--reinit SEED/);
    const badDefense = runCli(['proxy', '--upstream', upstream.url, '--defense', 'mad:eps=7']);
    assert.equal(badDefense.status, 2);
    assert.match(badDefense.stderr, /proxy: defense: mad: eps=7 exceeds/);
    const badProtocol = runCli(['proxy', '--upstream', upstream.url, '--protocol', 'grpc']);
    assert.equal(badProtocol.status, 2);
    assert.match(badProtocol.stderr, /--protocol must be one of kserve-v2, tf-serving, json-path/);
    const badBatch = runCli(['proxy', '--upstream', upstream.url, '--max-batch-rows', '0']);
    assert.equal(badBatch.status, 2);
    assert.match(badBatch.stderr, /--max-batch-rows must be an integer ≥ 1, got "0"/);
  });
});
