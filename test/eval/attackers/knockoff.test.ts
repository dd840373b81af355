import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { presetConfig } from '../../../src/eval/config.js';
import { runKnockoffAttack } from '../../../src/eval/attackers/knockoff.js';
import type { InferenceClient } from '../../../src/eval/endpoint/kserve-client.js';
import { tf } from '../../../src/models/index.js';
import { syntheticDataset } from '../helpers/synthetic-data.js';

describe('Knockoff attacker', () => {
  it('adaptive policy: spends the budget on distinct images, retrains its knockoff, frees its tensors', async () => {
    const data = syntheticDataset(5, { train: 500, test: 200, features: 64, classes: 4, noise: 0.3 });
    const features = 64;
    // The "victim" answers the true class of each image, as a confident distribution.
    const labelOf = new Map<string, number>();
    for (let i = 0; i < data.train.rows; i++) labelOf.set(data.train.x.subarray(i * features, (i + 1) * features).join(','), data.train.labels[i]);
    let requests = 0;
    const client: InferenceClient = {
      get requests() {
        return requests;
      },
      async infer(x, rows) {
        requests += 1;
        const out = new Float32Array(rows * 4).fill(0.02);
        for (let r = 0; r < rows; r++) {
          const label = labelOf.get(x.subarray(r * features, (r + 1) * features).join(','));
          assert.ok(label !== undefined, 'the attacker queried an image outside its pool');
          out[r * 4 + label] = 0.94;
        }
        return { rows, cols: 4, data: out };
      },
    };
    const quick = presetConfig('quick');
    const tensorsBefore = tf.memory().numTensors;
    const result = await runKnockoffAttack({
      pool: { x: data.train.x, rows: data.train.rows, features, labels: data.train.labels, classes: 4 },
      client,
      policy: 'adaptive',
      budget: 300,
      requestRows: 256,
      classes: 4,
      inputShape: [features],
      knockoff: { ...quick.knockoffTraining, arch: 'mlp', epochs: 3, batchSize: 16 },
      adaptive: { ...quick.adaptive, retrainEvery: 100, stepSize: 20 },
      labels: ['soft', 'argmax'],
      test: { x: data.test.x, rows: data.test.rows, labels: data.test.labels, victimTop1: data.test.labels },
      seed: 3,
    });
    assert.equal(tf.memory().numTensors, tensorsBefore);
    assert.equal(result.queries, 300);
    assert.equal(result.requests, 15, 'the adaptive policy asks in steps of 20 images');
    assert.equal(new Set(result.transfer.indices).size, 300);
    assert.equal(result.outcomes.length, 2);
    for (const outcome of result.outcomes) assert.ok(outcome.accuracy > 0.6, `${outcome.labels} knockoff ${outcome.accuracy}`);
  });
});
