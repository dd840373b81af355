import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  computeDefenseContextAsync,
  loadSurrogate,
  loadTfjsModel,
  ModelError,
  ModelInputError,
  Surrogate,
  type TfjsSurrogate,
  tf,
  withCpuFallback,
} from '../../../src/models/index.js';
import { inputs, setUpBackend, tinyMlp, withoutLeaks } from '../helpers.js';

before(setUpBackend);

const SHAPE = [6, 6, 2];
const CLASSES = 4;

/** A few-KB functional network: conv → batch norm → relu, a depthwise conv on a residual branch, add, pooling, dense. */
function functionalModel(seed: number, finalActivation: 'linear' | 'softmax' = 'linear'): tf.LayersModel {
  const init = (s: number) => tf.initializers.glorotUniform({ seed: seed * 100 + s });
  const input = tf.input({ shape: SHAPE });
  const conv = tf.layers
    .conv2d({
      filters: 3,
      kernelSize: 3,
      padding: 'same',
      kernelInitializer: init(1),
      biasInitializer: tf.initializers.randomUniform({ minval: -0.2, maxval: 0.2, seed: seed + 2 }),
    })
    .apply(input) as tf.SymbolicTensor;
  const norm = tf.layers
    .batchNormalization({
      gammaInitializer: tf.initializers.constant({ value: 1.3 }),
      betaInitializer: tf.initializers.constant({ value: 0.1 }),
      movingMeanInitializer: tf.initializers.constant({ value: 0.05 }),
      movingVarianceInitializer: tf.initializers.constant({ value: 1.7 }),
    })
    .apply(conv) as tf.SymbolicTensor;
  const relu = tf.layers.reLU().apply(norm) as tf.SymbolicTensor;
  const depthwise = tf.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', depthwiseInitializer: init(3) }).apply(relu) as tf.SymbolicTensor;
  const sum = tf.layers.add().apply([relu, depthwise]) as tf.SymbolicTensor;
  const pooled = tf.layers.globalAveragePooling2d({}).apply(sum) as tf.SymbolicTensor;
  const out = tf.layers
    .dense({
      units: CLASSES,
      activation: finalActivation,
      kernelInitializer: init(4),
      biasInitializer: tf.initializers.randomUniform({ minval: -0.3, maxval: 0.3, seed: seed + 5 }),
    })
    .apply(pooled) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

/** One gradient per class and input over every trainable variable, dotted in float64. */
function bruteForceGram(model: tf.LayersModel, logits: boolean, x: Float32Array, rows: number): Float64Array {
  const width = x.length / rows;
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const out = new Float64Array(rows * CLASSES * CLASSES);
  for (let r = 0; r < rows; r++) {
    const gradients: Float64Array[] = [];
    for (let k = 0; k < CLASSES; k++) {
      const flat = withCpuFallback(
        'brute force',
        () =>
          tf.tidy(() => {
            const input = tf.tensor(x.subarray(r * width, (r + 1) * width), [1, ...SHAPE]);
            const { grads } = tf.variableGrads(() => {
              const y = model.apply(input) as tf.Tensor2D;
              return (logits ? tf.logSoftmax(y) : tf.log(y)).slice([0, k], [1, 1]).sum() as tf.Scalar;
            }, variables);
            return tf.concat(variables.map((v) => grads[v.name].flatten())).dataSync();
          }),
        () => {},
      );
      gradients.push(Float64Array.from(flat));
    }
    for (let k = 0; k < CLASSES; k++) {
      for (let j = 0; j < CLASSES; j++) {
        let dot = 0;
        for (let d = 0; d < gradients[k].length; d++) dot += gradients[k][d] * gradients[j][d];
        out[(r * CLASSES + k) * CLASSES + j] = dot;
      }
    }
  }
  return out;
}

function assertRelClose(actual: Float64Array, expected: Float64Array, tolerance: number): void {
  assert.equal(actual.length, expected.length);
  const k2 = CLASSES * CLASSES;
  for (let r = 0; r < actual.length / k2; r++) {
    const scale = Math.max(...Array.from(expected.subarray(r * k2, (r + 1) * k2), Math.abs));
    assert.ok(scale > 0);
    for (let i = r * k2; i < (r + 1) * k2; i++)
      assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance * scale, `row ${r} entry ${i - r * k2}: ${actual[i]} vs ${expected[i]}`);
  }
}

describe('TfjsSurrogate on a functional model (residual add, batch norm, depthwise conv)', () => {
  it('answers the softmax of model.predict, in chunks, without leaking tensors', async () => {
    const model = functionalModel(1);
    const surrogate = (await loadSurrogate({ model, chunkRows: 2, usePlan: false })) as TfjsSurrogate;
    const rows = 5;
    const x = inputs(rows, 72, 3);
    const expected = tf.tidy(() => tf.softmax(model.predict(tf.tensor(x, [rows, ...SHAPE])) as tf.Tensor).dataSync());
    const probs = await withoutLeaks(() => surrogate.probsAsync(x, rows));
    assert.deepEqual([probs.rows, probs.cols, surrogate.classes, surrogate.differentiable], [rows, CLASSES, CLASSES, true]);
    assert.deepEqual(surrogate.inputShape, SHAPE);
    for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(probs.data[i] - expected[i]) < 1e-5, `entry ${i}: ${probs.data[i]} vs ${expected[i]}`);
    surrogate.dispose();
  });

  it('gives Gram matrices equal to brute-force per-class, per-input gradients (logits and softmax outputs)', async () => {
    const logitsModel = functionalModel(2);
    const softmaxModel = functionalModel(2, 'softmax');
    softmaxModel.setWeights(logitsModel.getWeights());
    const rows = 3;
    const x = inputs(rows, 72, 5);
    const expected = bruteForceGram(logitsModel, true, x, rows);
    for (const model of [logitsModel, softmaxModel]) {
      const surrogate = await loadSurrogate({ model, usePlan: false });
      const gram = await withoutLeaks(() => surrogate.gramAsync!(x, rows));
      assertRelClose(gram, expected, 1e-4);
      // Symmetric, positive semi-definite diagonal.
      for (let k = 0; k < CLASSES; k++) assert.ok(gram[k * CLASSES + k] >= 0);
      surrogate.dispose();
    }
  });

  it('feeds computeDefenseContextAsync and rejects malformed inputs as the client’s fault', async () => {
    const surrogate = await loadSurrogate({ model: functionalModel(3), usePlan: false });
    const x = inputs(2, 72, 7);
    const context = await withoutLeaks(() => computeDefenseContextAsync(['surrogate', 'surrogateGram', 'inputKey'], x, 2, { surrogate }));
    assert.equal(context.surrogateProbs?.rows, 2);
    assert.equal(context.gram?.length, 2 * CLASSES * CLASSES);
    assert.equal(context.inputKeys?.length, 2);
    await assert.rejects(surrogate.probsAsync(inputs(2, 71), 2), ModelInputError);
    const bad = inputs(1, 72);
    bad[3] = Number.NaN;
    await assert.rejects(surrogate.probsAsync(bad, 1), /non-finite/);
    surrogate.dispose();
  });

  it('re-initialises a functional model from a seed: deterministic, every weight changed, batch norm reset', async () => {
    await withoutLeaks(async () => {
      const model = functionalModel(4);
      const a = (await loadSurrogate({ model, reinit: 11, usePlan: false })) as TfjsSurrogate;
      const b = (await loadSurrogate({ model, reinit: 11, usePlan: false })) as TfjsSurrogate;
      const c = (await loadSurrogate({ model, reinit: 12, usePlan: false })) as TfjsSurrogate;
      const byName = (m: tf.LayersModel) => new Map(m.weights.map((w) => [w.originalName, w.read().dataSync()]));
      const original = byName(model);
      const [wa, wb, wc] = [a, b, c].map((s) => byName(s.model as tf.LayersModel));
      for (const [name, values] of original) {
        assert.deepEqual(wa.get(name), wb.get(name), `${name}: same seed, same values`);
        assert.notDeepEqual(wa.get(name), values, `${name}: changed`);
        if (/moving_mean|beta/.test(name))
          assert.ok(
            wa.get(name)!.every((v) => v === 0),
            name,
          );
        else if (/moving_variance|gamma/.test(name))
          assert.ok(
            wa.get(name)!.every((v) => v === 1),
            name,
          );
        else assert.notDeepEqual(wa.get(name), wc.get(name), `${name}: another seed, other values`);
      }
      // The model passed in is untouched and still usable.
      assert.deepEqual(byName(model), original);
      for (const s of [a, b, c]) s.dispose();
      model.dispose();
    });
  });
});

describe('loadSurrogate', () => {
  it('keeps chain models on the fast plan-based Surrogate', async () => {
    const surrogate = await loadSurrogate({ model: tinyMlp() });
    assert.ok(surrogate instanceof Surrogate);
    const probs = await surrogate.probsAsync(inputs(2, 16), 2);
    assert.deepEqual(probs, (surrogate as Surrogate).probs(inputs(2, 16), 2));
    surrogate.dispose();
  });

  it('refuses an ambiguous or empty source and a bad seed, saying what to write', async () => {
    await assert.rejects(loadSurrogate({}), (e: unknown) => e instanceof ModelError && /exactly one of dir, model or onnx/.test(e.message));
    await assert.rejects(loadSurrogate({ dir: '/x', onnx: '/y.onnx' }), /dir and onnx/);
    await assert.rejects(loadSurrogate({ dir: '/x', reinit: -1 }), /integer seed/);
  });
});

describe('GraphModel surrogate (hand-written graph model.json: MatMul, BiasAdd, Softmax)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-graph-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const W = [0.5, -1, 0.25, 2, 0, -0.5, 1, 1, -1.5]; // [3, 3]
  const B = [0.1, -0.2, 0.3];

  async function writeGraphModel(): Promise<void> {
    const floatAttr = { dtype: { type: 'DT_FLOAT' }, T: { type: 'DT_FLOAT' } };
    const modelJson = {
      format: 'graph-model',
      generatedBy: 'hand',
      convertedBy: 'hand',
      modelTopology: {
        node: [
          { name: 'x', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: { dim: [{ size: '-1' }, { size: '3' }] } } } },
          {
            name: 'w',
            op: 'Const',
            attr: { dtype: { type: 'DT_FLOAT' }, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: { dim: [{ size: '3' }, { size: '3' }] } } } },
          },
          { name: 'b', op: 'Const', attr: { dtype: { type: 'DT_FLOAT' }, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: { dim: [{ size: '3' }] } } } } },
          { name: 'mm', op: 'MatMul', input: ['x', 'w'], attr: { ...floatAttr, transpose_a: { b: false }, transpose_b: { b: false } } },
          { name: 'logits', op: 'BiasAdd', input: ['mm', 'b'], attr: floatAttr },
          { name: 'probs', op: 'Softmax', input: ['logits'], attr: floatAttr },
        ],
        versions: { producer: 1 },
      },
      weightsManifest: [
        {
          paths: ['weights.bin'],
          weights: [
            { name: 'w', shape: [3, 3], dtype: 'float32' },
            { name: 'b', shape: [3], dtype: 'float32' },
          ],
        },
      ],
    };
    await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson));
    await writeFile(join(dir, 'weights.bin'), new Uint8Array(Float32Array.from([...W, ...B]).buffer));
  }

  it('loads from a directory and answers softmax(xW + b) as computed by hand; forward-only', async () => {
    await writeGraphModel();
    const surrogate = await loadSurrogate({ dir, inputShape: [3] });
    assert.equal(surrogate.differentiable, false);
    assert.equal(surrogate.classes, 3);
    const x = Float32Array.from([1, 2, 3, -1, 0.5, 0]);
    const probs = await withoutLeaks(() => surrogate.probsAsync(x, 2));
    for (let r = 0; r < 2; r++) {
      const z = [0, 1, 2].map((j) => B[j] + [0, 1, 2].reduce((s, i) => s + x[r * 3 + i] * W[i * 3 + j], 0));
      const e = z.map((v) => Math.exp(v - Math.max(...z)));
      const total = e.reduce((a, v) => a + v, 0);
      e.forEach((v, j) => assert.ok(Math.abs(probs.data[r * 3 + j] - v / total) < 1e-6, `row ${r} class ${j}`));
    }
    await assert.rejects(computeDefenseContextAsync(['surrogateGram'], x, 2, { surrogate }), /jacobian=last-layer/);
    // A graph model is re-initialised too (graph-reinit.test.ts covers it): the same shape, other weights.
    const fresh = await loadSurrogate({ dir, inputShape: [3], reinit: 1 });
    assert.equal(fresh.classes, 3);
    assert.notDeepEqual(Array.from((await fresh.probsAsync(x, 2)).data), Array.from(probs.data));
    fresh.dispose();
    surrogate.dispose();
  });
});

describe('nsfwjs MobileNetV2 as a surrogate', () => {
  const dir = 'node_modules/nsfwjs/dist/models/mobilenet_v2';

  it('loads its bundled layers model, re-initialises it from a seed (every weight changed) and answers 5 probabilities', async () => {
    await withoutLeaks(async () => {
      const { model } = await loadTfjsModel(dir);
      const layers = model as tf.LayersModel;
      assert.ok(
        layers.layers.some((l) => l.getClassName() === 'Add'),
        'a functional (residual) network',
      );
      // Keyed by name: freezing changes the order of model.weights (trainable ones first).
      const byName = (m: tf.LayersModel) => new Map(m.weights.map((w) => [w.originalName, w.read().dataSync()]));
      const trained = byName(layers);
      const a = (await loadSurrogate({ dir, reinit: 7 })) as TfjsSurrogate;
      const b = (await loadSurrogate({ dir, reinit: 7 })) as TfjsSurrogate;
      const c = (await loadSurrogate({ dir, reinit: 8 })) as TfjsSurrogate;
      const [wa, wb, wc] = [a, b, c].map((s) => byName(s.model as tf.LayersModel));
      assert.equal(wa.size, trained.size);
      let redrawn = 0;
      for (const [name, values] of trained) {
        assert.notDeepEqual(wa.get(name), values, `${name} changed`);
        assert.deepEqual(wa.get(name), wb.get(name), `${name}: same seed, same values`);
        if (/moving_mean|beta/.test(name))
          assert.ok(
            wa.get(name)!.every((v) => v === 0),
            name,
          );
        else if (/moving_variance|gamma/.test(name))
          assert.ok(
            wa.get(name)!.every((v) => v === 1),
            name,
          );
        else {
          assert.notDeepEqual(wa.get(name), wc.get(name), `${name}: another seed, other values`);
          redrawn++;
        }
      }
      // Every layer trainable after re-initialisation: full-Jacobian MAD sees all parameters.
      assert.equal((a.model as tf.LayersModel).trainableWeights.length, redrawn + [...trained.keys()].filter((n) => /gamma|beta/.test(n)).length);
      assert.ok(redrawn > 50);
      assert.equal(a.differentiable, true);
      assert.deepEqual([a.classes, ...a.inputShape], [5, 224, 224, 3]);
      const image = inputs(1, 224 * 224 * 3, 9).map((v) => (v + 1) / 2);
      const probs = await withoutLeaks(() => a.probsAsync(image, 1));
      assert.equal(probs.data.length, 5);
      assert.ok(Math.abs(probs.data.reduce((s, v) => s + v, 0) - 1) < 1e-5);
      assert.ok(probs.data.every((v) => v > 0));
      for (const s of [a, b, c]) s.dispose();
      model.dispose();
    });
  });
});
