/**
 * A thin adapter from the synchronous Surrogate class to the asynchronous SurrogateModel contract:
 * the forward pass is built inside tf.tidy and read with `await tensor.data()` instead of dataSync,
 * so a backend that computes off the main thread (webgl, a native GPU) lets the event loop run.
 * Chunking is the caller's job (the serving layer's batcher sends at most maxBatchRows rows).
 */
import { withCpuFallback } from '../backend.js';
import { supportsDenseGram, gramTensor } from './gram.js';
import { forwardLogits, planOf } from './plan.js';
import { checkInputs } from './predict.js';
import type { Surrogate } from './plan-surrogate.js';
import { tf, type Tensor } from '../tf.js';
import type { SurrogateModel } from '../../surrogate-model.js';

async function readAndDispose<T extends Float32Array | Float64Array>(tensor: Tensor, as: new (values: ArrayLike<number>) => T): Promise<T> {
  try {
    const values = await tensor.data();
    return values instanceof as ? (values as T) : new as(values as ArrayLike<number>);
  } finally {
    tensor.dispose();
  }
}

export function asyncSurrogate(surrogate: Surrogate): SurrogateModel {
  const { model } = surrogate;
  const plan = planOf(model);
  const inputShape = model.inputs[0].shape.slice(1) as number[];
  const method = supportsDenseGram(plan) ? 'dense' : 'autodiff';
  const input = (inputs: Float32Array, rows: number): Tensor => {
    checkInputs(model, inputs, rows);
    return tf.tensor(inputs, [rows, ...inputShape], 'float32');
  };
  return {
    classes: surrogate.classes,
    inputShape,
    differentiable: true,
    probsAsync: async (inputs, rows) => {
      const probs = withCpuFallback('the surrogate’s probabilities', () => tf.tidy(() => tf.softmax(forwardLogits(plan, input(inputs, rows)))));
      return { rows, cols: surrogate.classes, data: await readAndDispose(probs, Float32Array) };
    },
    gramAsync: async (inputs, rows) => {
      const gram = withCpuFallback('the surrogate’s Gram matrices', () => tf.tidy(() => gramTensor(plan, input(inputs, rows), method)));
      return readAndDispose(gram, Float64Array);
    },
    dispose: () => surrogate.dispose(),
  };
}
