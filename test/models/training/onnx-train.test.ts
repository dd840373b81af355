import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import { createModel, describeTrainingEngine, tf, trainModel, type LayersModel } from '../../../src/models/index.js';
import { fromOnnxKernel, onnxTrainingSupport, toOnnxKernel } from '../../../src/models/training/onnx-train-graph.js';
import { planOf } from '../../../src/models/tfjs/plan/plan.js';
import { inputs, setUpBackend, withoutLeaks } from '../helpers.js';

before(setUpBackend);

/** Soft targets on the simplex, a different peak per row. */
function softTargets(rows: number, classes: number): Float32Array {
  const t = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < classes; k++) t[r * classes + k] = 1 + Math.sin(r * 7 + k * 3) ** 2;
    t[r * classes + (r % classes)] += 4;
    const sum = t.subarray(r * classes, (r + 1) * classes).reduce((a, b) => a + b, 0);
    for (let k = 0; k < classes; k++) t[r * classes + k] /= sum;
  }
  return t;
}

function weightsOf(model: LayersModel): Float32Array[] {
  return model.getWeights().map((w) => Float32Array.from(w.dataSync()));
}

/** Mean |a − b| over all weights. */
function meanDifference(a: Float32Array[], b: Float32Array[]): number {
  let sum = 0;
  let count = 0;
  a.forEach((values, i) => values.forEach((v, j) => ((sum += Math.abs(v - b[i][j])), count++)));
  return sum / count;
}

const models: [string, () => LayersModel, number][] = [
  // 12×12 tiles every pool (the upsampled-mask gradient); the flat input goes through a reshape.
  ['cnn, flat 144-value input', () => createModel({ arch: 'cnn', inputShape: [144], classes: 4, seed: 3, filters: [3, 5], hidden: [6] }), 144],
  // 13×13: the first pool drops a row and a column (MaxPool indices and MaxUnpool).
  ['lenet, 13×13×1 image', () => createModel({ arch: 'lenet', inputShape: [13, 13, 1], classes: 3, seed: 4, filters: [2, 4], hidden: [5] }), 169],
  ['mlp', () => createModel({ arch: 'mlp', inputShape: [20], classes: 5, seed: 5, hidden: [7, 6] }), 20],
];

describe('training on onnxruntime', () => {
  for (const [name, build, width] of models) {
    it(`follows the tfjs loop step for step: ${name}`, async () => {
      const rows = 40;
      const x = inputs(rows, width, 2);
      const first = build();
      const classes = (first.outputs[0].shape[1] as number) ?? 0;
      const targets = softTargets(rows, classes);
      const initial = weightsOf(first);
      const options = { epochs: 2, batchSize: 16, learningRate: 0.01, seed: 9 };
      const tfjs = await trainModel(first, { x, rows, targets }, { ...options, engine: 'tfjs' });
      const second = build();
      const onnx = await withoutLeaks(() => trainModel(second, { x, rows, targets }, { ...options, engine: 'onnxruntime' }));
      const moved = meanDifference(weightsOf(first), initial);
      const apart = meanDifference(weightsOf(first), weightsOf(second));
      // Six Adam steps move weights by ~1e-2; the two engines differ by rounding only.
      assert.ok(moved > 1e-3, `training moved the weights by ${moved}`);
      assert.ok(apart < moved * 1e-3, `engines differ by ${apart} on average (weights moved ${moved})`);
      onnx.history.forEach((epoch, i) => {
        assert.ok(Math.abs(epoch.loss - tfjs.history[i].loss) < 1e-4, `epoch ${i + 1} loss ${epoch.loss} vs ${tfjs.history[i].loss}`);
        assert.equal(epoch.accuracy, tfjs.history[i].accuracy);
      });
      [first, second].forEach((m) => m.dispose());
    });
  }

  it('writes the weights back before each onStep, so checkpoints see every step', async () => {
    const model = createModel({ arch: 'mlp', inputShape: [20], classes: 3, seed: 6, hidden: [4] });
    const rows = 30;
    const seen: Float32Array[][] = [];
    const initial = weightsOf(model);
    await trainModel(
      model,
      { x: inputs(rows, 20, 3), rows, targets: softTargets(rows, 3) },
      { epochs: 1, batchSize: 10, engine: 'onnxruntime', onStep: () => seen.push(weightsOf(model)) },
    );
    assert.equal(seen.length, 3);
    assert.ok(meanDifference(seen[0], initial) > 0, 'the first step changed the model');
    assert.ok(meanDifference(seen[1], seen[0]) > 0 && meanDifference(seen[2], seen[1]) > 0, 'each step changed the model');
    assert.equal(meanDifference(weightsOf(model), seen[2]), 0, 'the model ends as the last step left it');
    model.dispose();
  });

  it('names what it does not cover; auto then trains on tfjs', async () => {
    const sigmoid = tf.sequential({ layers: [tf.layers.dense({ inputShape: [6], units: 4, activation: 'sigmoid' }), tf.layers.dense({ units: 3 })] });
    assert.equal(onnxTrainingSupport(planOf(sigmoid)), 'activation sigmoid');
    const strided = tf.sequential({
      layers: [tf.layers.conv2d({ inputShape: [8, 8, 1], filters: 2, kernelSize: 3, strides: 2 }), tf.layers.flatten(), tf.layers.dense({ units: 3 })],
    });
    assert.equal(onnxTrainingSupport(planOf(strided)), 'a strided convolution');
    const averaged = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [8, 8, 1], filters: 2, kernelSize: 3 }),
        tf.layers.averagePooling2d({ poolSize: 2 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 3 }),
      ],
    });
    assert.equal(onnxTrainingSupport(planOf(averaged)), 'average pooling');
    assert.equal(onnxTrainingSupport(planOf(createModel({ arch: 'cnn', inputShape: [28, 28, 1], classes: 10, seed: 1 }))), undefined);

    const x = inputs(8, 6, 1);
    const labels = new Uint8Array(8).map((_, i) => i % 3);
    await assert.rejects(trainModel(sigmoid, { x, rows: 8, labels }, { epochs: 1, engine: 'onnxruntime' }), /does not cover activation sigmoid/);
    const result = await trainModel(sigmoid, { x, rows: 8, labels }, { epochs: 1 });
    assert.equal(result.backend, tf.getBackend());
    [sigmoid, strided, averaged].forEach((m) => m.dispose());
  });

  it('says which engine trains; MSD_TRAIN_ENGINE and MSD_TRAIN_THREADS override the defaults', async () => {
    const saved = process.env.MSD_TRAIN_ENGINE;
    try {
      delete process.env.MSD_TRAIN_ENGINE;
      assert.match(await describeTrainingEngine(), /^training: onnxruntime-node \(models and losses it covers/);
      process.env.MSD_TRAIN_ENGINE = 'tfjs';
      assert.equal(await describeTrainingEngine(), `training: tfjs ${tf.getBackend()} (MSD_TRAIN_ENGINE=tfjs)`);
      const model = createModel({ arch: 'mlp', inputShape: [20], classes: 3, seed: 6, hidden: [4] });
      const result = await trainModel(model, { x: inputs(10, 20, 3), rows: 10, targets: softTargets(10, 3) }, { epochs: 1 });
      assert.equal(result.backend, tf.getBackend());
      delete process.env.MSD_TRAIN_ENGINE;
      const savedThreads = process.env.MSD_TRAIN_THREADS;
      try {
        process.env.MSD_TRAIN_THREADS = '2';
        const twoThreads = await trainModel(model, { x: inputs(10, 20, 3), rows: 10, targets: softTargets(10, 3) }, { epochs: 1 });
        assert.equal(twoThreads.backend, 'onnxruntime (2 threads)');
        process.env.MSD_TRAIN_THREADS = 'many';
        await assert.rejects(
          trainModel(model, { x: inputs(10, 20, 3), rows: 10, targets: softTargets(10, 3) }, { epochs: 1 }),
          /threads must be an integer ≥ 1, got MSD_TRAIN_THREADS="many"/,
        );
      } finally {
        if (savedThreads === undefined) delete process.env.MSD_TRAIN_THREADS;
        else process.env.MSD_TRAIN_THREADS = savedThreads;
      }
      process.env.MSD_TRAIN_ENGINE = 'pytorch';
      await assert.rejects(
        trainModel(model, { x: inputs(10, 20, 3), rows: 10, targets: softTargets(10, 3) }, { epochs: 1 }),
        /MSD_TRAIN_ENGINE "pytorch" is not one of auto, tfjs, onnxruntime/,
      );
      model.dispose();
    } finally {
      if (saved === undefined) delete process.env.MSD_TRAIN_ENGINE;
      else process.env.MSD_TRAIN_ENGINE = saved;
    }
  });

  it('converts kernels between [kh, kw, in, out] and [out, in, kh, kw] without loss', () => {
    fc.assert(
      fc.property(
        fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
        (shape) => {
          const [kh, kw, cin, cout] = shape;
          const values = Float32Array.from({ length: kh * kw * cin * cout }, (_, i) => i);
          const onnx = toOnnxKernel(values, shape);
          // Entry (y, x, i, o) of the model's kernel is entry (o, i, y, x) of ONNX's.
          const [y, x, i, o] = [kh - 1, 0, cin - 1, cout - 1];
          assert.equal(onnx[((o * cin + i) * kh + y) * kw + x], values[((y * kw + x) * cin + i) * cout + o]);
          assert.deepEqual(fromOnnxKernel(onnx, shape), values);
        },
      ),
    );
  });
});
