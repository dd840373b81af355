/**
 * Per-input Gram matrices M = G Gᵀ of the gradients of the K log-probabilities over ALL of a model's
 * parameters (G is K×D; full-Jacobian MAD needs only M). G is never formed. For each layer with
 * weights W (input a, pre-activation z = aW + b) the gradient of log p_k is a ⊗ δ_k, with δ_k the
 * back-propagated error at z, so
 *
 *   ⟨g_k, g_j⟩ = Σ_layers (δ_k·δ_j)(a·a + 1)         (dense; the 1 is the bias)
 *   ⟨g_k, g_j⟩ = Σ_layers ⟨Pᵀδ_k, Pᵀδ_j⟩ + ⟨Σ_p δ_k, Σ_p δ_j⟩   (conv; P the input patches)
 *
 * Two ways to get the δ, both batched over inputs and computed with tfjs (so a GPU backend runs them):
 * - `dense`: for chains of dense layers, back-propagate all K errors at once in closed form;
 * - `autodiff`: any supported chain (convolutions, pooling): one backward pass over K copies of the
 *   batch, copy k differentiating log p_k, taking gradients at zero offsets added to each z.
 */
import { UnsupportedModelError } from '../../errors.js';
import { extractPatches } from './conv.js';
import { matMul } from './matmul.js';
import { forwardLogits, type ForwardTrace, type ModelPlan, type ParametricStep, type StepActivation } from './plan.js';
import { tf, type Tensor } from '../tf.js';

export type GramMethod = 'dense' | 'autodiff';

/** Whether the closed-form dense path applies (only reshapes and dense layers). */
export function supportsDenseGram(plan: ModelPlan): boolean {
  return plan.steps.every((step) => step.kind === 'dense' || step.kind === 'reshape');
}

/** B×K×K Gram matrices for the batch `x` (a tensor of B inputs). Returns a [B, K, K] tensor; call inside tf.tidy. */
export function gramTensor(plan: ModelPlan, x: Tensor, method: GramMethod = supportsDenseGram(plan) ? 'dense' : 'autodiff'): Tensor {
  if (method === 'dense') {
    if (!supportsDenseGram(plan)) throw new UnsupportedModelError('the dense Gram method needs a model made of dense layers only; use autodiff');
    return denseGram(plan, x);
  }
  return autodiffGram(plan, x);
}

function derivative(z: Tensor, activation: StepActivation): Tensor | undefined {
  switch (activation) {
    case 'relu':
      return tf.step(z);
    case 'sigmoid': {
      const s = tf.sigmoid(z);
      return tf.mul(s, tf.sub(1, s));
    }
    case 'tanh':
      return tf.sub(1, tf.square(tf.tanh(z)));
    default:
      return undefined;
  }
}

/** Rows k of [B, K, K]: e_k − p, the gradient of log p_k with respect to the logits. */
function logProbErrors(logits: Tensor): Tensor {
  const classes = logits.shape[1] as number;
  return tf.sub(tf.eye(classes).expandDims(0), tf.softmax(logits).expandDims(1));
}

function denseGram(plan: ModelPlan, x: Tensor): Tensor {
  const trace: ForwardTrace = { inputs: [], preActivations: [] };
  const logits = forwardLogits(plan, x, { trace });
  const steps = plan.steps.filter((s): s is ParametricStep => s.kind === 'dense');
  const [batch, classes] = logits.shape as [number, number];
  const last = steps.length - 1;
  // δ at the last pre-activation: (e_k − p) ⊙ act'(z_L) when the last layer is not linear.
  let delta = logProbErrors(logits);
  const lastDerivative = derivative(trace.preActivations[last], steps[last].activation);
  if (lastDerivative) delta = tf.mul(delta, lastDerivative.expandDims(1));
  let gram: Tensor = tf.zeros([batch, classes, classes]);
  for (let l = last; l >= 0; l--) {
    const a = trace.inputs[l];
    const scale = tf
      .sum(tf.square(a), 1)
      .add(steps[l].bias ? 1 : 0)
      .reshape([batch, 1, 1]);
    gram = tf.add(gram, tf.mul(matMul(delta, delta, false, true), scale));
    if (l > 0) {
      const width = a.shape[1] as number;
      const back = matMul(delta.reshape([batch * classes, delta.shape[2] as number]), steps[l].kernel, false, true).reshape([batch, classes, width]);
      const d = derivative(trace.preActivations[l - 1], steps[l - 1].activation);
      delta = d ? tf.mul(back, d.expandDims(1)) : back;
    }
  }
  return gram;
}

function autodiffGram(plan: ModelPlan, x: Tensor): Tensor {
  const batch = x.shape[0];
  const classes = plan.classes;
  // K copies of the batch: copy k (rows k·B .. k·B+B−1) differentiates log p_k.
  const copies = tf.tile(x.reshape([batch, -1]), [classes, 1]);
  const trace: ForwardTrace = { inputs: [], preActivations: [] };
  forwardLogits(plan, copies, { trace });
  const offsets = trace.preActivations.map((z) => tf.zerosLike(z));
  const classOfRow = new Int32Array(batch * classes);
  for (let k = 0; k < classes; k++) classOfRow.fill(k, k * batch, (k + 1) * batch);
  const selector = tf.oneHot(tf.tensor1d(classOfRow, 'int32'), classes).toFloat();
  const deltas = tf.grads((...zeros: Tensor[]) => tf.sum(tf.mul(tf.logSoftmax(forwardLogits(plan, copies, { offsets: zeros })), selector)))(offsets);
  const steps = plan.steps.filter((s): s is ParametricStep => s.kind === 'dense' || s.kind === 'conv2d');
  let gram: Tensor = tf.zeros([batch, classes, classes]);
  steps.forEach((step, l) => {
    const a = trace.inputs[l].slice(0, batch);
    // [K·B, ...] → [B, K, ...]
    const delta = deltas[l].reshape([classes, batch, ...deltas[l].shape.slice(1)]);
    const perInput = tf.transpose(delta, [1, 0, ...delta.shape.slice(2).map((_, i) => i + 2)]);
    gram = tf.add(gram, step.kind === 'dense' ? denseLayerGram(perInput, a, Boolean(step.bias)) : convLayerGram(step, perInput, a));
  });
  return gram;
}

/** (δ_k·δ_j)(a·a + bias) for one dense layer; delta [B, K, m], a [B, n]. */
function denseLayerGram(delta: Tensor, a: Tensor, hasBias: boolean): Tensor {
  const batch = a.shape[0];
  const scale = tf
    .sum(tf.square(a), 1)
    .add(hasBias ? 1 : 0)
    .reshape([batch, 1, 1]);
  return tf.mul(matMul(delta, delta, false, true), scale);
}

/** Per-example kernel gradients Pᵀδ_k (P: input patches) and bias gradients Σ_p δ_k, then their Gram. */
function convLayerGram(step: Extract<ParametricStep, { kind: 'conv2d' }>, delta: Tensor, a: Tensor): Tensor {
  const [kh, kw, cin, cout] = step.kernel.shape as [number, number, number, number];
  const [batch, classes] = delta.shape as [number, number];
  const features = kh * kw * cin;
  const patches = extractPatches(a, { kernelShape: [kh, kw, cin, cout], strides: step.strides, padding: step.padding });
  const positions = (patches.shape[1] as number) * (patches.shape[2] as number);
  const p = patches.reshape([batch, positions, features]);
  // delta [B, K, H', W', C] → [B, P, K·C]
  const d = tf.transpose(delta.reshape([batch, classes, positions, cout]), [0, 2, 1, 3]).reshape([batch, positions, classes * cout]);
  const kernelGrads = tf
    .transpose(matMul(p, d, true, false).reshape([batch, features, classes, cout]), [0, 2, 1, 3])
    .reshape([batch, classes, features * cout]);
  let gram = matMul(kernelGrads, kernelGrads, false, true);
  if (step.bias) {
    const biasGrads = tf.sum(delta.reshape([batch, classes, positions, cout]), 2);
    gram = tf.add(gram, matMul(biasGrads, biasGrads, false, true));
  }
  return gram;
}
