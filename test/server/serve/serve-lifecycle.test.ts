/**
 * `msd serve` as a process: SIGTERM drains (a request in flight when the signal comes is still
 * answered, 200, before the process exits 0), and --admin-token-env mounts the admin route.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { startServeCommand } from '../helpers/serve-command.js';
import { createModel, initBackend, saveModel } from '../../../src/models/index.js';

const FEATURES = 784;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const originOf = (curl: string): string => new URL(/(http:\/\/\S+)$/.exec(curl)![1]).origin;

/** A KServe V2 body of `rows` MNIST-shaped UINT8 rows. */
function batchText(rows: number): string {
  const data = Array.from({ length: rows * FEATURES }, (_, i) => (i * 31) % 256);
  return JSON.stringify({ inputs: [{ name: 'image', shape: [rows, FEATURES], datatype: 'UINT8', data }] });
}

describe('msd serve: shutdown and the admin route', () => {
  let modelDir: string;
  before(async () => {
    await initBackend({ log: () => {} });
    modelDir = await mkdtemp(join(tmpdir(), 'msd-serve-life-'));
    const model = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: 10, seed: 3, hidden: [8] });
    await saveModel(model, modelDir);
    model.dispose();
  });
  after(async () => {
    await rm(modelDir, { recursive: true, force: true });
  });

  it('answers a request in flight at SIGTERM (200), then exits 0', async () => {
    const serve = await startServeCommand(['--model-dir', modelDir, '--defense', 'rounding:decimals=2', '--log-level', 'warn']);
    let exitCode: number | null = null;
    try {
      const url = new URL(`${originOf(serve.curl)}/v2/models/mnist/infer`);
      const rows = 256;
      const body = Buffer.from(batchText(rows));
      // The request's headers and half its body reach the server; SIGTERM comes while it is in flight;
      // then the rest of the body. A server that drops connections at SIGTERM never answers it.
      const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.write(body.subarray(0, body.length >> 1));
        void sleep(500).then(async () => {
          serve.child.kill('SIGTERM');
          await sleep(500);
          req.end(body.subarray(body.length >> 1));
        });
      });
      const { status, text } = await answer;
      assert.equal(status, 200, text);
      const parsed = JSON.parse(text) as { outputs: { shape: number[]; data: number[] }[] };
      assert.deepEqual(parsed.outputs[0].shape, [rows, 10]);
      assert.equal(parsed.outputs[0].data.length, rows * 10);
    } finally {
      exitCode = await serve.stop();
    }
    assert.equal(exitCode, 0, serve.stderr());
    assert.match(serve.stderr(), /SIGTERM: closing/);
  });

  it('--admin-token-env mounts the admin route: 200 with the token, 401 without', async () => {
    const token = 'a-test-admin-token-of-32-characters';
    const serve = await startServeCommand(
      [
        '--model-dir',
        modelDir,
        '--defense',
        'rounding:decimals=2',
        '--log-level',
        'warn',
        '--client-id',
        'header:x-api-key',
        '--admin-token-env',
        'MSD_TEST_ADMIN_TOKEN',
      ],
      { ...process.env, MSD_TEST_ADMIN_TOKEN: token },
    );
    let exitCode: number | null = null;
    try {
      const origin = originOf(serve.curl);
      await request(origin).post('/v2/models/mnist/infer').set('x-api-key', 'k1').set('content-type', 'application/json').send(batchText(1)).expect(200);
      const listed = await request(origin).get('/admin/clients').set('authorization', `Bearer ${token}`).expect(200);
      assert.equal(listed.body.store, 'memory');
      assert.equal(listed.body.clients.length, 1, JSON.stringify(listed.body));
      const refused = await request(origin).get('/admin/clients').expect(401);
      assert.match(refused.body.error, /Authorization: Bearer/);
      await request(origin).get('/admin/clients').set('authorization', 'Bearer not-the-token-at-all-00000').expect(401);
    } finally {
      exitCode = await serve.stop();
    }
    assert.equal(exitCode, 0, serve.stderr());
  });
});
