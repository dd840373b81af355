/**
 * 2-D convolution whose gradients run on every backend. wasm has no Conv2DBackpropFilter kernel, and
 * falling back to the cpu backend makes a LeNet train at a few images per second; here the filter
 * gradient is Pᵀ·dy, with P the input patches, and the patches come from a forward convolution with
 * a one-hot kernel (a kernel wasm has). gram.ts uses the same patches for per-example gradients.
 */
import { matMul } from './matmul.js';
import { tf, type Tensor } from './tf.js';

export interface ConvGeometry {
  readonly kernelShape: readonly [number, number, number, number];
  readonly strides: [number, number];
  readonly padding: 'same' | 'valid';
}

/** The input patches in the kernel's layout: [B, H', W', kh·kw·cin], entry (i·kw + j)·cin + c. */
export function extractPatches(a: Tensor, geometry: ConvGeometry): Tensor {
  const [kh, kw, cin] = geometry.kernelShape;
  const features = kh * kw * cin;
  return tf.tidy(() => tf.conv2d(a as tf.Tensor4D, tf.eye(features).reshape([kh, kw, cin, features]) as tf.Tensor4D, geometry.strides, geometry.padding));
}

type ConvFunction = (a: Tensor, kernel: Tensor, bias: Tensor) => Tensor;
const cache = new Map<string, ConvFunction>();

/** conv2d(a, kernel) + bias with the gradients above; `inputGradient: false` when `a` is the data. */
export function conv2d(a: Tensor, kernel: Tensor, bias: Tensor | undefined, strides: [number, number], padding: 'same' | 'valid', inputGradient: boolean): Tensor {
  const key = `${strides.join('x')}:${padding}:${inputGradient}`;
  let op = cache.get(key);
  if (!op) {
    op = makeConv(strides, padding, inputGradient);
    cache.set(key, op);
  }
  return op(a, kernel, bias ?? tf.zeros([kernel.shape[3] as number]));
}

function makeConv(strides: [number, number], padding: 'same' | 'valid', inputGradient: boolean): ConvFunction {
  const op = tf.customGrad(((a: Tensor, kernel: Tensor, bias: Tensor, save: tf.GradSaveFunc) => {
    save([a, kernel]);
    return {
      value: tf.add(tf.conv2d(a as tf.Tensor4D, kernel as tf.Tensor4D, strides, padding), bias),
      gradFunc: (dy: Tensor, [savedA, savedKernel]: Tensor[]) => {
        const shape = savedKernel.shape as [number, number, number, number];
        const patches = extractPatches(savedA, { kernelShape: shape, strides, padding });
        const rows = patches.size / (shape[0] * shape[1] * shape[2]);
        const kernelGradient = matMul(patches.reshape([rows, -1]), dy.reshape([rows, shape[3]]), true, false).reshape(shape);
        const inputGrad = inputGradient
          ? tf.conv2dTranspose(dy as tf.Tensor4D, savedKernel as tf.Tensor4D, savedA.shape as [number, number, number, number], strides, padding)
          : tf.zerosLike(savedA);
        return [inputGrad, kernelGradient, tf.sum(dy, [0, 1, 2])];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return (a, kernel, bias) => op(a, kernel, bias) as Tensor;
}
