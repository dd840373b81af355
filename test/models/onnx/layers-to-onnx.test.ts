/**
 * TF.js layers models converted to ONNX (engine 'onnx'): onnxruntime's probabilities equal
 * model.predict's for a functional network using every converted layer kind (odd sizes, so TF's
 * asymmetric 'same' padding shows), a sequential one and nsfwjs's trained MobileNetV2; unknown layers
 * are refused by name; re-initialisation gives the same weights as the TF.js engine's.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { layersModelToOnnx, loadSurrogate, ModelError, tf, UnsupportedModelError, type SurrogateModel } from '../../../src/models/index.js';
import { inputs, setUpBackend, withoutLeaks } from '../helpers.js';

before(setUpBackend);

const NSFW = 'node_modules/nsfwjs/dist/models/mobilenet_v2';
const SHAPE = [9, 9, 3];
const CLASSES = 5;

/** Every converted layer kind once, with non-trivial weights and batch-norm statistics. */
function everyLayerModel(): tf.LayersModel {
  const apply = (layer: tf.layers.Layer, x: tf.SymbolicTensor | tf.SymbolicTensor[]) => layer.apply(x) as tf.SymbolicTensor;
  const input = tf.input({ shape: SHAPE });
  const stem = apply(tf.layers.conv2d({ filters: 8, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu6' }), input); // 5×5×8
  const norm = apply(tf.layers.reLU({ maxValue: 6 }), apply(tf.layers.batchNormalization({}), stem));
  const depthwise = apply(tf.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same', activation: 'swish' }), norm); // 5×5×16
  const project = apply(tf.layers.conv2d({ filters: 8, kernelSize: 1, useBias: false }), depthwise);
  const residual = apply(tf.layers.add(), [norm, project]);
  const mixed = apply(tf.layers.multiply(), [apply(tf.layers.average(), [residual, norm]), apply(tf.layers.activation({ activation: 'sigmoid' }), residual)]);
  const padded = apply(
    tf.layers.zeroPadding2d({
      padding: [
        [1, 0],
        [0, 1],
      ],
    }),
    mixed,
  ); // 6×6×8
  const separable = apply(tf.layers.separableConv2d({ filters: 6, kernelSize: 3, strides: 2, padding: 'valid', activation: 'tanh' }), padded); // 2×2×6
  const wide = apply(tf.layers.concatenate(), [residual, apply(tf.layers.conv2d({ filters: 4, kernelSize: 2, padding: 'same', dilationRate: 2 }), residual)]); // 5×5×12
  const maxed = apply(tf.layers.maxPooling2d({ poolSize: 2, strides: 1, padding: 'same' }), wide);
  const averaged = apply(tf.layers.averagePooling2d({ poolSize: 3, strides: 2, padding: 'same' }), wide); // 3×3×12
  const features = apply(tf.layers.concatenate(), [
    apply(tf.layers.globalAveragePooling2d({}), maxed),
    apply(tf.layers.globalMaxPooling2d({}), wide),
    apply(tf.layers.flatten(), averaged),
    apply(tf.layers.flatten(), separable),
  ]);
  const hidden = apply(
    tf.layers.dropout({ rate: 0.5 }),
    apply(tf.layers.batchNormalization({}), apply(tf.layers.dense({ units: 16, activation: 'elu' }), features)),
  );
  const out = apply(
    tf.layers.dense({ units: CLASSES, activation: 'softmax' }),
    apply(tf.layers.maximum(), [hidden, apply(tf.layers.minimum(), [hidden, apply(tf.layers.activation({ activation: 'relu' }), hidden)])]),
  );
  const model = tf.model({ inputs: input, outputs: out });
  // Trained-looking weights: every value drawn, variances positive.
  model.weights.forEach((weight, i) => {
    const values = tf.tidy(() => {
      const drawn = tf.randomUniform(weight.shape as number[], -0.6, 0.6, 'float32', 100 + i);
      return weight.originalName.endsWith('moving_variance') ? drawn.abs().add(0.3) : drawn;
    });
    weight.write(values);
    values.dispose();
  });
  return model;
}

async function onnxProbs(model: tf.LayersModel, x: Float32Array, rows: number): Promise<Float32Array> {
  const surrogate = await loadSurrogate({ onnx: layersModelToOnnx(model) });
  try {
    return (await surrogate.probsAsync(x, rows)).data;
  } finally {
    surrogate.dispose();
  }
}

function tfjsProbs(model: tf.LayersModel, x: Float32Array, rows: number, shape: readonly number[]): Float32Array {
  return tf.tidy(() => (model.predict(tf.tensor(x, [rows, ...shape])) as tf.Tensor).dataSync() as Float32Array);
}

function maxDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  return a.reduce((worst, v, i) => Math.max(worst, Math.abs(v - b[i])), 0);
}

describe('layers model → ONNX', () => {
  it('answers model.predict’s probabilities for a functional network with every converted layer kind', async () => {
    const model = everyLayerModel();
    try {
      const rows = 3;
      const x = inputs(
        rows,
        SHAPE.reduce((a, b) => a * b),
      );
      const expected = tfjsProbs(model, x, rows, SHAPE);
      const got = await withoutLeaks(() => onnxProbs(model, x, rows));
      assert.ok(maxDifference(got, expected) < 2e-5, `max difference ${maxDifference(got, expected)}`);
      assert.ok(
        maxDifference(expected, new Float32Array(expected.length).fill(1 / CLASSES)) > 0.01,
        'the probabilities are not uniform, so the comparison means something',
      );
    } finally {
      model.dispose();
    }
  });

  it('converts a sequential model', async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [8, 8, 1], filters: 4, kernelSize: 3, activation: 'relu' }),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 3, activation: 'softmax' }),
      ],
    });
    try {
      const x = inputs(2, 64, 1);
      assert.ok(maxDifference(await onnxProbs(model, x, 2), tfjsProbs(model, x, 2, [8, 8, 1])) < 1e-5);
    } finally {
      model.dispose();
    }
  });

  it('refuses a layer it does not convert, naming it', () => {
    const input = tf.input({ shape: [4, 4, 2] });
    const up = tf.layers.upSampling2d({ size: [2, 2], name: 'grow' }).apply(input) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 2 }).apply(tf.layers.flatten().apply(up)) as tf.SymbolicTensor });
    try {
      assert.throws(
        () => layersModelToOnnx(model),
        (error: unknown) => error instanceof UnsupportedModelError && /layer "grow" \(UpSampling2D\): not supported.*engine 'tfjs'/.test(error.message),
      );
    } finally {
      model.dispose();
    }
  });

  it('runs nsfwjs’s trained MobileNetV2 as TF.js does, and re-initialises it with the TF.js engine’s weights', { timeout: 120_000 }, async () => {
    const x = inputs(2, 224 * 224 * 3, 2).map((v) => (v + 1) / 2);
    const pairs: Array<[SurrogateModel, SurrogateModel]> = [
      [await loadSurrogate({ dir: NSFW }), await loadSurrogate({ dir: NSFW, engine: 'onnx' })],
      [await loadSurrogate({ dir: NSFW, reinit: 3 }), await loadSurrogate({ dir: NSFW, reinit: 3, engine: 'onnx' })],
      // In a worker thread too: the engine crosses with the other options.
      [await loadSurrogate({ dir: NSFW, reinit: 3 }), await loadSurrogate({ dir: NSFW, reinit: 3, engine: 'onnx', thread: true })],
    ];
    try {
      for (const [tfjs, onnx] of pairs) {
        assert.equal(onnx.differentiable, false);
        assert.deepEqual([onnx.classes, onnx.inputShape], [tfjs.classes, tfjs.inputShape]);
        const expected = (await tfjs.probsAsync(x, 2)).data;
        const got = (await onnx.probsAsync(x, 2)).data;
        assert.ok(maxDifference(got, expected) < 1e-4, `max difference ${maxDifference(got, expected)}`);
      }
    } finally {
      for (const pair of pairs) for (const surrogate of pair) surrogate.dispose();
    }
  });

  it('checks the engine option', async () => {
    await assert.rejects(
      loadSurrogate({ dir: NSFW, engine: 'torch' as never }),
      (error: unknown) => error instanceof ModelError && /engine must be one of tfjs, onnx/.test(error.message),
    );
  });
});
