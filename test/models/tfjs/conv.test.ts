import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { tf, withCpuFallback } from '../../../src/models/index.js';
import { onCpu } from '../../../src/models/tfjs/backend.js';
import { conv2d } from '../../../src/models/tfjs/plan/conv.js';
import { dense } from '../../../src/models/tfjs/plan/matmul.js';
import { forwardLogits, planOf } from '../../../src/models/tfjs/plan/plan.js';
import { maxPoolForTraining } from '../../../src/models/tfjs/plan/pool.js';
import { createModel } from '../../../src/models/index.js';
import { inputs, setUpBackend, withoutLeaks } from '../helpers.js';

before(setUpBackend);

function tensor(shape: number[], salt: number): tf.Tensor {
  return tf.tensor(
    inputs(
      1,
      shape.reduce((a, b) => a * b, 1),
      salt,
    ),
    shape,
  );
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, what);
  const scale = Math.max(1, ...Array.from(expected, Math.abs));
  for (let i = 0; i < actual.length; i++) assert.ok(Math.abs(actual[i] - expected[i]) <= 1e-4 * scale, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
}

/** Gradients of Σ w·f(a, k, b) with respect to a, k and b. */
function gradients(f: (a: tf.Tensor, k: tf.Tensor, b: tf.Tensor) => tf.Tensor, shapes: number[][]): Float32Array[] {
  return tf.tidy(() => {
    const [a, k, b] = shapes.map((shape, i) => tensor(shape, i + 1));
    const probe = (x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) => {
      const out = f(x, y, z);
      return tf.sum(tf.mul(out, tensor(out.shape, 9)));
    };
    return tf
      .grads(probe)([a, k, b])
      .map((g) => g.dataSync() as Float32Array);
  });
}

describe('conv2d and dense with their own gradients', () => {
  for (const [padding, strides] of [
    ['valid', [1, 1]],
    ['same', [1, 1]],
    ['same', [2, 2]],
    ['valid', [2, 1]],
  ] as const) {
    it(`conv2d (${padding}, strides ${strides.join('×')}) matches tfjs's gradients`, async () => {
      const shapes = [[2, 7, 6, 3], [3, 2, 3, 4], [4]];
      const ours = await withoutLeaks(() => gradients((a, k, b) => conv2d(a, k, b, [...strides], padding, true), shapes));
      // The reference needs Conv2DBackpropFilter, which wasm lacks.
      const reference = withCpuFallback(
        'the reference',
        () => gradients((a, k, b) => tf.add(tf.conv2d(a as tf.Tensor4D, k as tf.Tensor4D, [...strides], padding), b), shapes),
        () => {},
      );
      ['input', 'kernel', 'bias'].forEach((name, i) => assertClose(ours[i], reference[i], name));
    });
  }

  it('dense matches tfjs’s gradients, and skips the input gradient when asked', async () => {
    const shapes = [[5, 7], [7, 3], [3]];
    const reference = gradients((a, k, b) => tf.add(tf.matMul(a, k), b), shapes);
    const ours = await withoutLeaks(() => gradients((a, k, b) => dense(a, k, b, true), shapes));
    ['input', 'kernel', 'bias'].forEach((name, i) => assertClose(ours[i], reference[i], name));
    const withoutInput = gradients((a, k, b) => dense(a, k, b, false), shapes);
    assert.ok(withoutInput[0].every((v) => v === 0));
    assertClose(withoutInput[1], reference[1], 'kernel');
  });
});

describe('max pooling for training', () => {
  // The reference runs on cpu: wasm's MaxPoolGrad disagrees with cpu's at some positions of multi-channel inputs.
  it('matches tfjs’s (cpu) value and gradient where the windows tile the input, and falls back elsewhere', async () => {
    for (const [shape, size] of [
      [[2, 6, 4, 3], 2],
      [[1, 6, 6, 2], 3],
      [[1, 5, 5, 2], 2], // does not tile: tfjs's own pool
    ] as const) {
      const pool = (a: tf.Tensor) => maxPoolForTraining(a, [size, size], [size, size], 'valid');
      const reference = (a: tf.Tensor) => tf.maxPool(a as tf.Tensor4D, size, size, 'valid');
      const run = (f: (a: tf.Tensor) => tf.Tensor) =>
        tf.tidy(() => {
          const a = tensor([...shape], 4);
          const w = tensor(f(a).shape, 9);
          return [
            f(a).dataSync() as Float32Array,
            tf
              .grad((x: tf.Tensor) => tf.sum(tf.mul(f(x), w)))(a)
              .dataSync() as Float32Array,
          ];
        });
      const ours = await withoutLeaks(() => run(pool));
      const expected = onCpu(() => run(reference));
      assertClose(ours[0], expected[0], `value ${shape}`);
      assertClose(ours[1], expected[1], `gradient ${shape}`);
    }
  });

  it('a LeNet’s training forward (pool before ReLU) gives the same logits as inference', () => {
    const model = createModel({ arch: 'cnn', inputShape: [16, 16, 1], classes: 3, seed: 4, filters: [3, 4], hidden: [5] });
    const plan = planOf(model);
    const [train, infer] = tf.tidy(() => {
      const x = tensor([3, 16, 16, 1], 2);
      return [forwardLogits(plan, x, { differentiable: true }).dataSync(), forwardLogits(plan, x).dataSync()];
    });
    model.dispose();
    assertClose(train, infer, 'logits');
  });
});
