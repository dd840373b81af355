/**
 * Matrix products that run at full speed on every backend. wasm's BatchMatMul is many times slower
 * when asked to transpose an operand (docs/measurements/benchmarks.md, models-train), while an explicit transpose costs a few percent; tfjs's own matMul gradient uses those flags. So the
 * products below transpose explicitly on wasm, and `dense` carries its own gradient built on them.
 */
import { tf, type Tensor } from '../tf.js';

export function matMul(a: Tensor, b: Tensor, transposeA = false, transposeB = false): Tensor {
  if ((!transposeA && !transposeB) || tf.getBackend() !== 'wasm') return tf.matMul(a, b, transposeA, transposeB);
  return tf.matMul(transposeA ? swapLastAxes(a) : a, transposeB ? swapLastAxes(b) : b);
}

function swapLastAxes(t: Tensor): Tensor {
  const axes = t.shape.map((_, i) => i);
  axes[t.rank - 1] = t.rank - 2;
  axes[t.rank - 2] = t.rank - 1;
  return tf.transpose(t, axes);
}

const denseWithInputGradient = tf.customGrad(((a: Tensor, kernel: Tensor, bias: Tensor, save: tf.GradSaveFunc) => {
  save([a, kernel]);
  return {
    value: tf.add(tf.matMul(a, kernel), bias),
    gradFunc: (dy: Tensor, [savedA, savedKernel]: Tensor[]) => [matMul(dy, savedKernel, false, true), matMul(savedA, dy, true, false), tf.sum(dy, 0)],
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]);

const denseWithoutInputGradient = tf.customGrad(((a: Tensor, kernel: Tensor, bias: Tensor, save: tf.GradSaveFunc) => {
  save([a]);
  return {
    value: tf.add(tf.matMul(a, kernel), bias),
    // The input is data (not differentiated): its gradient, a full product, is skipped.
    gradFunc: (dy: Tensor, [savedA]: Tensor[]) => [tf.zerosLike(savedA), matMul(savedA, dy, true, false), tf.sum(dy, 0)],
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]);

/**
 * a·kernel + bias (2-D) with a gradient that avoids the transpose flags. `inputGradient: false` when
 * `a` is the data itself, whose gradient nothing uses.
 */
export function dense(a: Tensor, kernel: Tensor, bias: Tensor | undefined, inputGradient: boolean): Tensor {
  const b = bias ?? tf.zeros([kernel.shape[1] as number]);
  return (inputGradient ? denseWithInputGradient : denseWithoutInputGradient)(a, kernel, b) as Tensor;
}
