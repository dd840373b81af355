/**
 * Max pooling for training, with a gradient built from forward ops when the windows tile the input
 * (window = stride, 'valid', sizes divisible): dx = [x = up(max)]·up(dy), with up() the nearest-
 * neighbour upscaling. On wasm this costs less than half of tfjs's MaxPoolGrad kernel (measured,
 * CPU time, LeNet's first pool). Exact ties inside a window would each receive dy, where tfjs gives it
 * to one of them; training pools pre-activations (see plan.ts), where ties have probability zero.
 */
import { tf, type Tensor } from '../tf.js';

/** Whether maxPool(a, poolSize, strides, padding) tiles `a` exactly. */
export function tilesExactly(
  shape: readonly number[],
  poolSize: readonly [number, number],
  strides: readonly [number, number],
  padding: 'same' | 'valid',
): boolean {
  return (
    padding === 'valid' &&
    shape.length === 4 &&
    poolSize[0] === strides[0] &&
    poolSize[1] === strides[1] &&
    shape[1] % poolSize[0] === 0 &&
    shape[2] % poolSize[1] === 0
  );
}

const tiledMaxPool = tf.customGrad(((a: Tensor, window: Tensor, save: tf.GradSaveFunc) => {
  const [ph, pw] = window.shape as [number, number];
  const value = tf.maxPool(a as tf.Tensor4D, [ph, pw], [ph, pw], 'valid');
  save([a, value]);
  return {
    value,
    gradFunc: (dy: Tensor, [savedA, pooled]: Tensor[]) => {
      const size: [number, number] = [savedA.shape[1] as number, savedA.shape[2] as number];
      const mask = tf.cast(tf.equal(savedA, tf.image.resizeNearestNeighbor(pooled as tf.Tensor4D, size)), 'float32');
      return [tf.mul(mask, tf.image.resizeNearestNeighbor(dy as tf.Tensor4D, size)), tf.zerosLike(window)];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]);

/** maxPool whose gradient is fast on every backend where the windows tile the input; tfjs's otherwise. */
export function maxPoolForTraining(a: Tensor, poolSize: [number, number], strides: [number, number], padding: 'same' | 'valid'): Tensor {
  if (!tilesExactly(a.shape, poolSize, strides, padding)) return tf.maxPool(a as tf.Tensor4D, poolSize, strides, padding);
  // The window travels as the shape of a dummy tensor (customGrad takes tensors only).
  return tiledMaxPool(a, tf.zeros(poolSize)) as Tensor;
}
