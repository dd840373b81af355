import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { tf, withCpuFallback } from '../../src/models/index.js';
import { conv2d } from '../../src/models/conv.js';
import { dense } from '../../src/models/matmul.js';
import { inputs, setUpBackend, withoutLeaks } from './helpers.js';

before(setUpBackend);

function tensor(shape: number[], salt: number): tf.Tensor {
  return tf.tensor(inputs(1, shape.reduce((a, b) => a * b, 1), salt), shape);
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
    return tf.grads(probe)([a, k, b]).map((g) => g.dataSync() as Float32Array);
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
      const shapes = [
        [2, 7, 6, 3],
        [3, 2, 3, 4],
        [4],
      ];
      const ours = await withoutLeaks(() => gradients((a, k, b) => conv2d(a, k, b, [...strides], padding, true), shapes));
      // The reference needs Conv2DBackpropFilter, which wasm lacks.
      const reference = withCpuFallback('the reference', () => gradients((a, k, b) => tf.add(tf.conv2d(a as tf.Tensor4D, k as tf.Tensor4D, [...strides], padding), b), shapes), () => {});
      ['input', 'kernel', 'bias'].forEach((name, i) => assertClose(ours[i], reference[i], name));
    });
  }

  it('dense matches tfjs’s gradients, and skips the input gradient when asked', async () => {
    const shapes = [
      [5, 7],
      [7, 3],
      [3],
    ];
    const reference = gradients((a, k, b) => tf.add(tf.matMul(a, k), b), shapes);
    const ours = await withoutLeaks(() => gradients((a, k, b) => dense(a, k, b, true), shapes));
    ['input', 'kernel', 'bias'].forEach((name, i) => assertClose(ours[i], reference[i], name));
    const withoutInput = gradients((a, k, b) => dense(a, k, b, false), shapes);
    assert.ok(withoutInput[0].every((v) => v === 0));
    assertClose(withoutInput[1], reference[1], 'kernel');
  });
});
