import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { trainKnockoff, type TransferSet } from '../../../src/eval/attackers/knockoff.js';
import { convolutionFits, createModel, fittingArchitecture, initBackend, tf } from '../../../src/models/index.js';

before(() => initBackend({ log: () => {} }));

/** 16×16 images with one bright 8×8 quadrant (the class) on noise; soft answers put 0.9 on it. */
function quadrants(rows: number, salt: number): { x: Float32Array; labels: Int32Array; answers: Float32Array } {
  const x = new Float32Array(rows * 256);
  const labels = new Int32Array(rows);
  const answers = new Float32Array(rows * 4);
  for (let r = 0; r < rows; r++) {
    const label = (r * 7 + salt) % 4;
    labels[r] = label;
    for (let k = 0; k < 4; k++) answers[r * 4 + k] = k === label ? 0.9 : 0.1 / 3;
    for (let i = 0; i < 16; i++) {
      for (let j = 0; j < 16; j++) {
        const quadrant = (i < 8 ? 0 : 2) + (j < 8 ? 0 : 1);
        const noise = Math.abs(Math.sin((r * 256 + i * 16 + j) * 12.9898 + salt)) * 0.5;
        x[r * 256 + i * 16 + j] = (quadrant === label ? 0.5 : 0) + noise;
      }
    }
  }
  return { x, labels, answers };
}

describe('CNN knockoff', () => {
  it('has the calibrated shape: 5×5 convolutions of 32 and 64 channels, pooling, dense 256', () => {
    const model = createModel({ arch: 'cnn', inputShape: [784], classes: 10, seed: 1 });
    const shapes = model.trainableWeights.map((w) => w.shape.join('x'));
    model.dispose();
    assert.deepEqual(shapes, ['5x5x1x32', '32', '5x5x32x64', '64', '1600x256', '256', '256x10', '10']);
  });

  it('learns a tiny image task from soft answers, without leaking tensors', async () => {
    const train = quadrants(160, 1);
    const test = quadrants(80, 2);
    const transfer: TransferSet = { x: train.x, answers: { rows: 160, cols: 4, data: train.answers }, indices: Int32Array.from({ length: 160 }, (_, i) => i) };
    const before = tf.memory().numTensors;
    const outcome = await trainKnockoff(transfer, 'soft', {
      classes: 4,
      inputShape: [256],
      knockoff: { arch: 'cnn', epochs: 4, batchSize: 32, learningRate: 0.002 },
      test: { x: test.x, rows: 80, labels: test.labels, victimTop1: test.labels },
      seed: 5,
    });
    assert.equal(tf.memory().numTensors, before);
    assert.ok(outcome.accuracy > 0.9, `accuracy ${outcome.accuracy}`);
  });
});

describe('knockoff architecture for the input', () => {
  it('keeps the CNN for images of at least 12×12 and falls back to the MLP below, where the CNN cannot be built', () => {
    assert.equal(convolutionFits([784]), true);
    assert.equal(convolutionFits([12, 12, 3]), true);
    assert.equal(convolutionFits([64]), false);
    assert.equal(convolutionFits([11, 16, 1]), false);
    assert.equal(convolutionFits([50]), false);
    assert.equal(fittingArchitecture('cnn', [28, 28, 1]), 'cnn');
    assert.equal(fittingArchitecture('cnn', [64]), 'mlp');
    assert.equal(fittingArchitecture('lenet', [8, 8, 1]), 'mlp');
    assert.throws(() => createModel({ arch: 'cnn', inputShape: [64], classes: 3, seed: 1 }), /at least 12×12.*mlp/);
  });
});
