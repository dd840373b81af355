import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import {
  checkpointHardness,
  checkpointRecorder,
  createModel,
  loadCheckpointModels,
  loadModel,
  predictClasses,
  saveCheckpoints,
  saveModel,
  tf,
  trainModel,
} from '../../../src/models/index.js';
import { setUpBackend } from '../helpers.js';

describe('training checkpoints (HODA)', () => {
  before(setUpBackend);

  it('keeps 11 evenly spaced checkpoints, the last the final model, saves and loads them, and gives hardness per row', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'msd-checkpoints-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const rows = 200;
    const x = Float32Array.from({ length: rows * 4 }, (_, i) => Math.sin(i * 12.9898) * 0.5 + 0.5);
    const labels = Int32Array.from({ length: rows }, (_, r) => (x[r * 4] + x[r * 4 + 1] > 1 ? 1 : 0) + (x[r * 4 + 2] > 0.5 ? 1 : 0));
    const model = createModel({ arch: 'mlp', inputShape: [4], classes: 3, seed: 3, hidden: [8] });
    const recorder = checkpointRecorder(model, 11);
    const steps: number[] = [];
    await trainModel(
      model,
      { x, rows, labels },
      { epochs: 4, batchSize: 16, seed: 1, onStep: (step, total) => (steps.push(total), recorder.onStep(step, total)) },
    );
    assert.equal(recorder.checkpoints.length, 11);
    assert.equal(steps[0], 4 * 13, 'steps over all epochs');
    const final = model.getWeights().map((w) => Array.from(w.dataSync()));
    assert.deepEqual(
      recorder.checkpoints[10].map((w) => Array.from(w)),
      final,
      'the last checkpoint is the final model',
    );
    assert.notDeepEqual(
      recorder.checkpoints[0].map((w) => Array.from(w)),
      final,
    );
    await saveModel(model, dir);
    await saveCheckpoints(dir, recorder.checkpoints);
    const before = tf.memory().numTensors;
    const models = (await loadCheckpointModels(dir, () => loadModel(dir)))!;
    assert.equal(models.length, 11);
    const hardness = checkpointHardness(models, x, rows);
    assert.ok(hardness.every((h) => h >= 0 && h <= 10));
    const first = predictClasses(models[0], x, rows);
    const last = predictClasses(model, x, rows);
    // A row whose first checkpoint already disagrees with the final label cannot have hardness 0.
    for (let r = 0; r < rows; r++) if (first[r] !== last[r]) assert.ok(hardness[r] > 0);
    assert.ok(new Set(hardness).size > 1, 'rows differ in hardness');
    for (const m of models) m.dispose();
    assert.equal(tf.memory().numTensors, before);
    assert.equal(await loadCheckpointModels(tmpdir(), () => loadModel(dir)), undefined, 'no checkpoints: undefined (HODA off)');
    model.dispose();
  });
});

describe('HODA calibration on held-out images', () => {
  before(setUpBackend);

  it('takes the benign maximum over the chunks of many seeded orders', async () => {
    const { calibrateHodaOnHeldOut } = await import('../../../src/models/index.js');
    const models = [1, 2, 3].map((seed) => createModel({ arch: 'mlp', inputShape: [4], classes: 3, seed, hidden: [4] }));
    try {
      const rows = 250;
      const x = Float32Array.from({ length: rows * 4 }, (_, i) => Math.cos(i * 3.1) * 0.5 + 0.5);
      const one = calibrateHodaOnHeldOut(models, x, rows, { orders: 1 });
      const many = calibrateHodaOnHeldOut(models, x, rows, { orders: 20 });
      assert.deepEqual(
        one.thresholds.map((t) => [t.length, t.sequences]),
        [[100, 2]],
        'lengths longer than the held-out rows are left out',
      );
      assert.equal(many.thresholds[0].sequences, 40);
      const { hardnessHistogram } = await import('../../../src/detection/index.js');
      assert.deepEqual(
        many.benignHistogram,
        Array.from(hardnessHistogram(checkpointHardness(models, x, rows), 3)),
        'the benign histogram is that of all held-out rows, whatever the order',
      );
      assert.ok(many.thresholds[0].threshold >= 0);
    } finally {
      for (const m of models) m.dispose();
    }
  });
});
