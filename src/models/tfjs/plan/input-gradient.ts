/**
 * Gradients of a model's loss with respect to its input: what a Jacobian-based attacker needs to
 * synthesise points near the decision boundaries (Papernot et al., 2017) and what a targeted PGD
 * step follows. Runs the model's plan with input gradients switched on; where the backend lacks a
 * kernel of the backward pass (conv2dTranspose on some wasm builds), the work falls back to cpu.
 */
import { withCpuFallback } from '../backend.js';
import { ModelInputError } from '../../errors.js';
import { forwardLogits, planOf } from './plan.js';
import { tf, type LayersModel } from '../tf.js';

/**
 * sign(∇ₓ CE(softmax(F(x)), t)) per row: `rows` inputs, `targets` rows×K on the simplex (soft or
 * one-hot). Returns rows × inputSize values in {−1, 0, 1}. Tensors are freed.
 */
export function lossGradientSign(model: LayersModel, x: Float32Array, rows: number, targets: Float32Array): Float32Array {
  const plan = planOf(model);
  const width = plan.inputShape.reduce((a, b) => a * b, 1);
  if (x.length !== rows * width) throw new ModelInputError(`x holds ${x.length} values; ${rows} rows of ${width} need ${rows * width}`);
  if (targets.length !== rows * plan.classes)
    throw new ModelInputError(`targets hold ${targets.length} values; ${rows} rows of ${plan.classes} classes need ${rows * plan.classes}`);
  return withCpuFallback('input gradients', () =>
    tf.tidy(() => {
      const input = tf.tensor2d(x, [rows, width]);
      const t = tf.tensor2d(targets, [rows, plan.classes]);
      // The summed (not mean) loss: each row's gradient is its own, unscaled by the batch size.
      const gradient = tf.grad((v: tf.Tensor) => tf.neg(tf.sum(tf.mul(t, tf.logSoftmax(forwardLogits(plan, v, { inputGradient: true }))))))(input);
      return new Float32Array(tf.sign(gradient).dataSync());
    }),
  );
}
