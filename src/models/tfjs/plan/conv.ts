/**
 * 2-D convolution whose gradients run on every backend. wasm has no Conv2DBackpropFilter kernel, and
 * falling back to the cpu backend makes a LeNet train at a few images per second; here the filter
 * gradient is Pᵀ·dy, with P the input patches, and the patches come from a forward convolution with
 * a one-hot kernel (a kernel wasm has). gram.ts uses the same patches for per-example gradients.
 */
import { matMul } from './matmul.js';
import { tf, type Tensor } from '../tf.js';

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
export function conv2d(
  a: Tensor,
  kernel: Tensor,
  bias: Tensor | undefined,
  strides: [number, number],
  padding: 'same' | 'valid',
  inputGradient: boolean,
): Tensor {
  const key = `${strides.join('x')}:${padding}:${inputGradient}`;
  let op = cache.get(key);
  if (!op) {
    op = makeConv(strides, padding, inputGradient);
    cache.set(key, op);
  }
  return op(a, kernel, bias ?? tf.zeros([kernel.shape[3] as number]));
}

function makeConv(strides: [number, number], padding: 'same' | 'valid', inputGradient: boolean): ConvFunction {
  const unitStride = strides[0] === 1 && strides[1] === 1;
  const op = tf.customGrad(((a: Tensor, kernel: Tensor, bias: Tensor, save: tf.GradSaveFunc) => {
    save([a, kernel]);
    return {
      value: tf.add(tf.conv2d(a as tf.Tensor4D, kernel as tf.Tensor4D, strides, padding), bias),
      gradFunc: (dy: Tensor, [savedA, savedKernel]: Tensor[]) => {
        const shape = savedKernel.shape as [number, number, number, number];
        const kernelGradient = unitStride ? filterGradientByConv(savedA, dy, shape, padding) : filterGradientByPatches(savedA, dy, shape, strides, padding);
        let inputGrad: Tensor;
        if (!inputGradient) inputGrad = tf.zerosLike(savedA);
        else if (unitStride) inputGrad = inputGradientByConv(dy, savedKernel, padding);
        else inputGrad = tf.conv2dTranspose(dy as tf.Tensor4D, savedKernel as tf.Tensor4D, savedA.shape as [number, number, number, number], strides, padding);
        return [inputGrad, kernelGradient, sumOverPositions(dy)];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return (a, kernel, bias) => op(a, kernel, bias) as Tensor;
}

/** Σ over batch and positions of dy [B, H, W, C] as a product with a row of ones (wasm's Sum over leading axes transposes first). */
function sumOverPositions(dy: Tensor): Tensor {
  const channels = dy.shape[3] as number;
  const rows = dy.size / channels;
  return tf.matMul(tf.ones([1, rows]), dy.reshape([rows, channels])).reshape([channels]);
}

/** Pᵀ·dy through explicit patches (any stride; slow on wasm: the one-hot convolution is wide). */
function filterGradientByPatches(a: Tensor, dy: Tensor, shape: [number, number, number, number], strides: [number, number], padding: 'same' | 'valid'): Tensor {
  const patches = extractPatches(a, { kernelShape: shape, strides, padding });
  const rows = patches.size / (shape[0] * shape[1] * shape[2]);
  return matMul(patches.reshape([rows, -1]), dy.reshape([rows, shape[3]]), true, false).reshape(shape);
}

/** Zero padding that turns a stride-1 'same' convolution into a 'valid' one (TensorFlow's split: the extra row goes last). */
function samePadding(kh: number, kw: number): [[number, number], [number, number], [number, number], [number, number]] {
  return [
    [0, 0],
    [Math.floor((kh - 1) / 2), kh - 1 - Math.floor((kh - 1) / 2)],
    [Math.floor((kw - 1) / 2), kw - 1 - Math.floor((kw - 1) / 2)],
    [0, 0],
  ];
}

/**
 * Stride 1: dW[i,j,c,o] = Σ_{b,y,x} a[b,y+i,x+j,c]·dy[b,y,x,o] is itself a 'valid' convolution, with the
 * channels of `a` as its batch, the batch as its input channels and dy as its kernel. wasm runs
 * convolutions much faster than the patch matrix this replaces (no kh·kw-fold copy of the input).
 */
function filterGradientByConv(a: Tensor, dy: Tensor, shape: [number, number, number, number], padding: 'same' | 'valid'): Tensor {
  const [kh, kw] = shape;
  const padded = padding === 'same' ? tf.pad(a, samePadding(kh, kw)) : a;
  const input = tf.transpose(padded, [3, 1, 2, 0]); // [C, H, W, B]
  const filter = tf.transpose(dy, [1, 2, 0, 3]); // [H', W', B, O]
  const out = tf.conv2d(input as tf.Tensor4D, filter as tf.Tensor4D, 1, 'valid'); // [C, kh, kw, O]
  return tf.transpose(out, [1, 2, 0, 3]);
}

/** Stride 1: dx is the full correlation of dy with the kernel flipped in space and transposed in channels. */
function inputGradientByConv(dy: Tensor, kernel: Tensor, padding: 'same' | 'valid'): Tensor {
  const [kh, kw] = kernel.shape as [number, number, number, number];
  const flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2]);
  // 'valid' forward: pad dy by k−1 on each side. 'same': the forward padding, mirrored.
  const [, [top, bottom], [left, right]] = samePadding(kh, kw);
  const pads: [[number, number], [number, number], [number, number], [number, number]] =
    padding === 'valid'
      ? [
          [0, 0],
          [kh - 1, kh - 1],
          [kw - 1, kw - 1],
          [0, 0],
        ]
      : [
          [0, 0],
          [bottom, top],
          [right, left],
          [0, 0],
        ];
  return tf.conv2d(tf.pad(dy, pads) as tf.Tensor4D, flipped as tf.Tensor4D, 1, 'valid');
}
