import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { runCli } from '../../helpers/run-cli.js';
import { startServeCommand } from '../helpers/serve-command.js';
import { createModel, initBackend, saveModel } from '../../../src/models/index.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));

describe('msd serve (the demo)', () => {
  let modelDir: string;
  before(async () => {
    await initBackend({ log: () => {} });
    modelDir = await mkdtemp(join(tmpdir(), 'msd-serve-'));
    // An untrained MNIST-shaped model in the cache folder: the command loads it instead of training.
    const model = createModel({ arch: 'mlp', inputShape: [784], classes: 10, seed: 3, hidden: [8] });
    await saveModel(model, modelDir);
    model.dispose();
  });
  after(async () => {
    await rm(modelDir, { recursive: true, force: true });
  });

  it('loads the cached model, prints a working curl with an MNIST image, answers defended, and exits 0 on SIGTERM', async () => {
    const serve = await startServeCommand(['--model-dir', modelDir, '--defense', 'rounding:decimals=2', '--log-level', 'warn']);
    const { curl } = serve;
    let exitCode: number | null = null;
    try {
      const match = /-d @(\S+) (http:\/\/\S+)$/.exec(curl);
      assert.ok(match, curl);
      const body = JSON.parse(await readFile(join(root, match[1]), 'utf8'));
      assert.deepEqual(body.inputs[0].shape, [1, 784]);
      const url = new URL(match[2]);
      const res = await request(url.origin).post(url.pathname).send(body).expect(200);
      const data = res.body.outputs[0].data as number[];
      assert.equal(data.length, 10);
      assert.ok(Math.abs(data.reduce((a, b) => a + b, 0) - 1) < 1e-6);
      for (const v of data) assert.equal(Math.round(v * 100) / 100, v, `${v} has at most 2 decimals`);
      assert.match((await request(url.origin).get('/metrics').expect(200)).text, /msd_requests_total\{defense="rounding:decimals=2",outcome="defended"\} 1/);
    } finally {
      exitCode = await serve.stop();
    }
    assert.equal(exitCode, 0, serve.stderr());
  });

  it('--metrics-token-env: /metrics only with the token (its trailing newline trimmed)', async () => {
    const token = 'serve-metrics-token-0123456789';
    const serve = await startServeCommand(['--model-dir', modelDir, '--defense', 'argmax', '--log-level', 'warn', '--metrics-token-env', 'MSD_T'], {
      ...process.env,
      MSD_T: `${token}\n`,
    });
    try {
      const origin = new URL(/(http:\/\/\S+)$/.exec(serve.curl)![1]).origin;
      await request(origin).get('/metrics').expect(401);
      await request(origin).get('/metrics').set('authorization', `Bearer ${token}`).expect(200);
    } finally {
      assert.equal(await serve.stop(), 0, serve.stderr());
    }
  });

  it('--metrics-token-env: a missing or short token exits 2 before anything loads, without printing it', () => {
    const args = ['serve', '--model-dir', modelDir, '--metrics-token-env', 'MSD_T'];
    const unset = runCli(args, undefined, { MSD_T: '' });
    assert.equal(unset.status, 2, unset.stderr);
    assert.match(unset.stderr, /--metrics-token-env MSD_T: the environment variable MSD_T is not set/);
    const short = runCli(args, undefined, { MSD_T: 'short token' });
    assert.equal(short.status, 2, short.stderr);
    assert.match(short.stderr, /the token must have at least 16 characters and no spaces/);
    assert.ok(!short.stderr.includes('short token'), 'the token is not printed');
  });

  it('prints the request file absolutely when its cache lies outside the working directory (as when installed)', async () => {
    const cache = await mkdtemp(join(tmpdir(), 'msd-serve-cache-'));
    const serve = await startServeCommand(['--model-dir', modelDir, '--defense', 'rounding:decimals=2', '--log-level', 'warn'], {
      ...process.env,
      MSD_CACHE_DIR: cache,
    });
    try {
      const match = /-d @(\S+) /.exec(serve.curl);
      assert.ok(match, serve.curl);
      assert.ok(isAbsolute(match[1]) && match[1].startsWith(cache), `${match[1]} is not the absolute path under ${cache}`);
      assert.deepEqual(JSON.parse(await readFile(match[1], 'utf8')).inputs[0].shape, [1, 784]);
    } finally {
      assert.equal(await serve.stop(), 0, serve.stderr());
      await rm(cache, { recursive: true, force: true });
    }
  });
});
