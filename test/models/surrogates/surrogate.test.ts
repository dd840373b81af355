import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { ModelInputError, Surrogate, predictProbs, tf, withCpuFallback } from '../../../src/models/index.js';
import { inputs, setUpBackend, tinyLenet, tinyMlp, withoutLeaks } from '../helpers.js';

before(setUpBackend);

/**
 * Brute force: one gradient per class and input over every trainable variable, through the layers
 * API (not the project's plan), flattened and dotted in float64.
 */
function bruteForceGram(model: tf.LayersModel, x: Float32Array, rows: number): Float64Array {
  const shape = model.inputs[0].shape.slice(1) as number[];
  const width = x.length / rows;
  const classes = model.outputs[0].shape[1] as number;
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const out = new Float64Array(rows * classes * classes);
  for (let r = 0; r < rows; r++) {
    const gradients: Float64Array[] = [];
    for (let k = 0; k < classes; k++) {
      // wasm lacks Conv2DBackpropFilter: the brute force runs on cpu there.
      const flat = withCpuFallback(
        'brute force',
        () =>
          tf.tidy(() => {
            const input = tf.tensor(x.subarray(r * width, (r + 1) * width), [1, ...shape]);
            const { grads } = tf.variableGrads(
              () =>
                tf
                  .logSoftmax(model.apply(input) as tf.Tensor2D)
                  .slice([0, k], [1, 1])
                  .sum() as tf.Scalar,
              variables,
            );
            return tf.concat(variables.map((v) => grads[v.name].flatten())).dataSync();
          }),
        () => {},
      );
      gradients.push(Float64Array.from(flat));
    }
    for (let k = 0; k < classes; k++) {
      for (let j = 0; j < classes; j++) {
        let dot = 0;
        for (let d = 0; d < gradients[k].length; d++) dot += gradients[k][d] * gradients[j][d];
        out[(r * classes + k) * classes + j] = dot;
      }
    }
  }
  return out;
}

function assertClose(actual: Float64Array, expected: Float64Array, classes: number, tolerance = 1e-4): void {
  assert.equal(actual.length, expected.length);
  const k2 = classes * classes;
  for (let r = 0; r < actual.length / k2; r++) {
    const scale = Math.max(...Array.from(expected.subarray(r * k2, (r + 1) * k2), Math.abs));
    for (let i = r * k2; i < (r + 1) * k2; i++) {
      assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance * scale, `row ${r} entry ${i - r * k2}: ${actual[i]} vs ${expected[i]} (scale ${scale})`);
    }
  }
}

describe('Surrogate.gram', () => {
  it('matches brute force on a 16-8-3 MLP with the closed-form dense method', async () => {
    const surrogate = new Surrogate(tinyMlp(5), { gramMethod: 'dense', gramChunkRows: 3 });
    const x = inputs(5, 16, 1);
    const gram = await withoutLeaks(() => surrogate.gram(x, 5));
    assertClose(gram, bruteForceGram(surrogate.model, x, 5), 3);
    surrogate.dispose();
  });

  it('matches brute force on a 16-8-3 MLP with the autodiff method', async () => {
    const surrogate = new Surrogate(tinyMlp(6), { gramMethod: 'autodiff' });
    const x = inputs(4, 16, 2);
    const gram = await withoutLeaks(() => surrogate.gram(x, 4));
    assertClose(gram, bruteForceGram(surrogate.model, x, 4), 3);
    surrogate.dispose();
  });

  it('matches brute force on a tiny LeNet (convolutions, pooling)', async () => {
    const surrogate = new Surrogate(tinyLenet(7), { gramChunkRows: 2 });
    const x = inputs(3, 144, 3);
    const gram = await withoutLeaks(() => surrogate.gram(x, 3));
    assertClose(gram, bruteForceGram(surrogate.model, x, 3), 3);
    surrogate.dispose();
  });

  it('gives symmetric positive semi-definite matrices', () => {
    const surrogate = new Surrogate(tinyMlp(8));
    const gram = surrogate.gram(inputs(6, 16, 4), 6);
    for (let r = 0; r < 6; r++) {
      const m = (k: number, j: number) => gram[r * 9 + k * 3 + j];
      for (let k = 0; k < 3; k++) {
        assert.ok(m(k, k) >= 0);
        for (let j = 0; j < 3; j++) assert.ok(Math.abs(m(k, j) - m(j, k)) <= 1e-5 * Math.max(1, m(k, k)));
      }
      // The gradients of the K log-probabilities sum to zero weighted by p, so some direction a gives aᵀMa ≥ 0 only.
      const a = [1, -2, 0.5];
      let quad = 0;
      for (let k = 0; k < 3; k++) for (let j = 0; j < 3; j++) quad += a[k] * m(k, j) * a[j];
      assert.ok(quad >= -1e-4);
    }
    surrogate.dispose();
  });

  it('rejects inputs that do not fit', () => {
    const surrogate = new Surrogate(tinyMlp());
    assert.throws(() => surrogate.gram(new Float32Array(10), 1), ModelInputError);
    surrogate.dispose();
  });
});

describe('Surrogate', () => {
  it('random surrogates are reproducible from their seed', () => {
    const spec = { arch: 'mlp' as const, inputShape: [16], classes: 3, seed: 42, hidden: [8] };
    const a = Surrogate.random(spec);
    const b = Surrogate.random(spec);
    const c = Surrogate.random({ ...spec, seed: 43 });
    const x = inputs(4, 16);
    assert.deepEqual(Array.from(a.probs(x, 4).data), Array.from(b.probs(x, 4).data));
    assert.notDeepEqual(Array.from(a.probs(x, 4).data), Array.from(c.probs(x, 4).data));
    [a, b, c].forEach((s) => s.dispose());
  });

  it('probs returns a B×K batch equal to predictProbs', async () => {
    const surrogate = new Surrogate(tinyMlp(3));
    const x = inputs(4, 16);
    const batch = await withoutLeaks(() => surrogate.probs(x, 4));
    assert.equal(batch.rows, 4);
    assert.equal(batch.cols, 3);
    assert.deepEqual(Array.from(batch.data), Array.from(predictProbs(surrogate.model, x, 4)));
    surrogate.dispose();
  });
});
