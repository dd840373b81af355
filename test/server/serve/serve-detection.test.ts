import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { startServeCommand } from '../helpers/serve-command.js';
import { checkpointRecorder, createModel, initBackend, saveCheckpoints, saveModel, trainModel } from '../../../src/models/index.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));

describe('msd serve --client-id (the demo with detection)', () => {
  let modelDir: string;
  before(async () => {
    await initBackend({ log: () => {} });
    modelDir = await mkdtemp(join(tmpdir(), 'msd-serve-detect-'));
    // A tiny MNIST-shaped model with its training checkpoints in the cache folder (loaded, not trained).
    const model = createModel({ arch: 'mlp', inputShape: [784], classes: 10, seed: 3, hidden: [8] });
    const recorder = checkpointRecorder(model, 11);
    const rows = 64;
    await trainModel(
      model,
      { x: Float32Array.from({ length: rows * 784 }, (_, i) => ((i * 7919) % 255) / 255), rows, labels: Int32Array.from({ length: rows }, (_, r) => r % 10) },
      { epochs: 2, batchSize: 8, onStep: recorder.onStep },
    );
    await saveModel(model, modelDir);
    await saveCheckpoints(modelDir, recorder.checkpoints);
    model.dispose();
  });
  after(async () => {
    await rm(modelDir, { recursive: true, force: true });
  });

  it('turns HODA on from the checkpoints, escalates with MAD, and refuses a client past its budget', async () => {
    const detection = JSON.stringify({ budget: { maxQueries: 2, action: 'refuse' }, ood: { enabled: false } });
    const serve = await startServeCommand([
      '--model-dir',
      modelDir,
      '--defense',
      'rounding:decimals=2',
      '--log-level',
      'warn',
      '--client-id',
      'header:x-api-key',
      '--detection',
      detection,
    ]);
    const { curl } = serve;
    let exitCode: number | null = null;
    try {
      assert.match(
        serve.stderr(),
        /client detection by header:x-api-key \(memory store\), escalation mad-argmax → argmax; HODA on \(11 checkpoints, calibrated on 5000 held-out images\)/,
      );
      const match = /-d @(\S+) (http:\/\/\S+)$/.exec(curl)!;
      const body = JSON.parse(await readFile(join(root, match[1]), 'utf8'));
      const url = new URL(match[2]);
      await request(url.origin).post(url.pathname).set('x-api-key', 'k1').send(body).expect(200);
      await request(url.origin).post(url.pathname).set('x-api-key', 'k1').send(body).expect(403);
      await request(url.origin).post(url.pathname).set('x-api-key', 'k2').send(body).expect(200);
    } finally {
      exitCode = await serve.stop();
    }
    assert.equal(exitCode, 0, serve.stderr());
  });
});
