/**
 * HODA in the demo (msd serve --client-id, with the victim's training checkpoints): a request's
 * hardness is computed in chunks that give the event loop back, so a large request does not hold the
 * health route (or any other request) until its 11 × rows checkpoint predictions are done.
 * Ordering only, no wall-clock limits: the health answer must come while the hardness is still
 * being computed, and before the large request's answer.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { serveDetection } from '../../../src/cli/commands/serve-detection.js';
import type { PopulationServingOptions } from '../../../src/server/clients/options.js';
import {
  checkpointHardness,
  checkpointRecorder,
  createModel,
  initBackend,
  loadCheckpointModels,
  loadModel,
  saveCheckpoints,
  saveModel,
  Surrogate,
  trainModel,
  type LayersModel,
} from '../../../src/models/index.js';
import { buildDemoApp, type DemoApp } from '../../../src/demo/app.js';
import { chunkedHardness } from '../../../src/demo/hardness.js';
import { surrogateContext } from '../../../src/server/surrogate-context.js';

const FEATURES = 784;
const pixels = (rows: number, seed: number): Float32Array => Float32Array.from({ length: rows * FEATURES }, (_, i) => (((i + seed) * 7919) % 255) / 255);

describe('demo HODA: hardness computed in chunks, off the event loop’s critical path', () => {
  let modelDir: string;
  let victim: LayersModel;
  before(async () => {
    await initBackend({ log: () => {} });
    modelDir = await mkdtemp(join(tmpdir(), 'msd-demo-hoda-'));
    const model = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: 10, seed: 3, hidden: [32] });
    const recorder = checkpointRecorder(model, 11);
    const rows = 64;
    await trainModel(
      model,
      { x: pixels(rows, 0), rows, labels: Int32Array.from({ length: rows }, (_, r) => r % 10) },
      { epochs: 2, batchSize: 8, onStep: recorder.onStep },
    );
    await saveModel(model, modelDir);
    await saveCheckpoints(modelDir, recorder.checkpoints);
    victim = model;
  });
  after(async () => {
    victim.dispose();
    await rm(modelDir, { recursive: true, force: true });
  });

  it('chunkedHardness gives the same hardness as checkpointHardness, yielding between chunks', async () => {
    const checkpoints = (await loadCheckpointModels(modelDir, () => loadModel(modelDir)))!;
    try {
      const rows = 300;
      const x = pixels(rows, 5);
      let turns = 0;
      let counting = true;
      const tick = (): void => {
        turns += 1;
        if (counting) setImmediate(tick);
      };
      setImmediate(tick);
      const got = await chunkedHardness(checkpoints, { chunkRows: 64 })({ rows, cols: FEATURES, data: x });
      counting = false;
      assert.deepEqual(Array.from(got), Array.from(checkpointHardness(checkpoints, x, rows)));
      assert.ok(turns >= 4, `the event loop turned between the 5 chunks (${turns} turns)`);
    } finally {
      checkpoints.forEach((m) => m.dispose());
    }
  });

  it('with --population, calibrates population detection’s HODA on the held-out split too', async () => {
    const heldOut = { x: pixels(400, 3), rows: 400 };
    const detecting = (await serveDetection({ clientId: 'header:x-api-key', population: '{"minQueries":150}' }, modelDir, heldOut))!;
    try {
      assert.match(
        detecting.summary,
        /HODA on \(11 checkpoints, calibrated on 400 held-out images\); population HODA calibrated on the same examples \(max distance 0\.\d+ over windows of 150\)/,
      );
      const { hoda } = detecting.clients.population as PopulationServingOptions;
      assert.equal(hoda!.reference!.length, 11);
      assert.ok(Math.abs(hoda!.reference!.reduce((a, b) => a + b, 0) - 1) < 1e-9);
    } finally {
      detecting.dispose();
    }
  });

  it('a 4,000-row request with detection on does not hold /v2/health/live', async () => {
    const heldOut = { x: pixels(200, 1), rows: 200 };
    const detecting = (await serveDetection({ clientId: 'header:x-api-key', detection: JSON.stringify({ ood: { enabled: false } }) }, modelDir, heldOut))!;
    assert.match(detecting.summary, /HODA on \(11 checkpoints/);
    const events: string[] = [];
    let hardnessStarted!: () => void;
    const started = new Promise<void>((resolve) => (hardnessStarted = resolve));
    const hardness = detecting.clients.hardness!;
    detecting.clients.hardness = async (inputs) => {
      events.push('hardness started');
      hardnessStarted();
      const out = await hardness(inputs);
      events.push('hardness done');
      return out;
    };
    const surrogate = Surrogate.random({ arch: 'mlp', inputShape: [FEATURES], classes: 10, seed: 7, hidden: [8] });
    let demo: DemoApp | undefined;
    let server: Server | undefined;
    try {
      demo = buildDemoApp({
        model: victim,
        defense: 'rounding:decimals=2',
        context: surrogateContext({ surrogate }),
        tiers: detecting.setup.tiers,
        clients: detecting.clients,
        processMetrics: false,
      });
      server = await new Promise<Server>((resolve) => {
        const s = demo!.app.listen(0, '127.0.0.1', () => resolve(s));
      });
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const rows = 4000;
      const data = Array.from({ length: rows * FEATURES }, (_, i) => (i * 31) % 256);
      const body = JSON.stringify({ inputs: [{ name: 'image', shape: [rows, FEATURES], datatype: 'UINT8', data }] });
      const big = fetch(`${base}/v2/models/mnist/infer`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': 'k1' }, body }).then(
        async (res) => {
          const text = await res.text();
          events.push('big answered');
          return { status: res.status, text };
        },
      );
      await started;
      const health = await fetch(`${base}/v2/health/live`).then(async (res) => {
        const json = await res.json();
        events.push('health answered');
        return { status: res.status, json };
      });
      const answer = await big;
      assert.deepEqual(health, { status: 200, json: { live: true } });
      assert.equal(answer.status, 200, answer.text);
      assert.equal((JSON.parse(answer.text) as { outputs: { data: number[] }[] }).outputs[0].data.length, rows * 10);
      assert.deepEqual(events, ['hardness started', 'health answered', 'hardness done', 'big answered']);
    } finally {
      if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
      await demo?.close();
      surrogate.dispose();
      detecting.dispose();
    }
  });
});
