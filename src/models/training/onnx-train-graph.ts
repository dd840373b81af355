/**
 * One training step of a model plan as an ONNX graph: forward pass, soft-label cross-entropy, the
 * backward pass written out by hand, and Adam's update, so that onnxruntime (native, vectorised
 * convolutions) runs the whole step. Inputs: the batch, the Adam state of every weight; outputs: the
 * new state, the summed loss and the number of top-1 matches. Convolutions run in ONNX's NCHW layout
 * with kernels as [out, in, kh, kw]; `toOnnxKernel` / `fromOnnxKernel` convert the model's.
 *
 * Only what the project's architectures use is covered (dense and stride-1 convolutions with ReLU or
 * no activation, non-overlapping max pooling, reshapes); `onnxTrainingSupport` says why a plan is not.
 */
import type { OnnxModelSpec, OnnxNodeSpec, OnnxTensorSpec } from './onnx-writer.js';
import type { ModelPlan, StepActivation } from './plan.js';
import type { Variable } from './tf.js';

/** Adam's constants, as tf.train.adam uses them (epsilon is tfjs's float32 epsilon). */
export const ADAM = { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 } as const;

export interface TrainingGraph {
  readonly spec: OnnxModelSpec;
  /** Per trainable variable: its input names (outputs add NEXT) and the variable. */
  readonly weights: readonly WeightSlot[];
}

export interface WeightSlot {
  /** Input names of the value and Adam's two moments; outputs are the same with a `_next` suffix. */
  readonly value: string;
  readonly firstMoment: string;
  readonly secondMoment: string;
  /** Shape in ONNX layout. */
  readonly shape: readonly number[];
  /** A convolution kernel, stored [out, in, kh, kw] in the graph and [kh, kw, in, out] in the model. */
  readonly convolution: boolean;
  /** The model's variable it trains. */
  readonly variable: Variable;
}

/** Feed names besides the weights. */
export const TRAINING_INPUTS = { x: 'x', targets: 'targets', rows: 'rows', learningRate: 'learning_rate', oneMinusBeta1Power: 'one_minus_beta1_power', oneMinusBeta2Power: 'one_minus_beta2_power' } as const;
export const TRAINING_OUTPUTS = { lossSum: 'loss_sum', correct: 'correct' } as const;
export const NEXT = '_next';

/** Why `plan` cannot train on onnxruntime, or undefined when it can. */
export function onnxTrainingSupport(plan: ModelPlan): string | undefined {
  let rank = plan.inputShape.length;
  for (const step of plan.steps) {
    if ((step.kind === 'dense' || step.kind === 'conv2d' || step.kind === 'activation') && !supportedActivation(step.activation)) return `activation ${step.activation}`;
    if (step.kind === 'conv2d') {
      if (rank !== 3) return 'a convolution on a non-image tensor';
      if (step.strides[0] !== 1 || step.strides[1] !== 1) return 'a strided convolution';
    } else if (step.kind === 'maxPool') {
      if (rank !== 3) return 'pooling on a non-image tensor';
      if (step.padding !== 'valid' || step.poolSize[0] !== step.strides[0] || step.poolSize[1] !== step.strides[1]) return 'overlapping or padded pooling';
    } else if (step.kind === 'avgPool') return 'average pooling';
    else if (step.kind === 'dense' && rank !== 1) return 'a dense layer on a tensor of rank > 1';
    else if (step.kind === 'reshape') rank = step.shape.length;
  }
  return undefined;
}

function supportedActivation(activation: StepActivation): boolean {
  return activation === 'relu' || activation === 'linear';
}

type Layout = 'nchw' | 'semantic';

/** The ONNX graph of one training step of `plan` (check onnxTrainingSupport first). */
export function buildTrainingGraph(plan: ModelPlan): TrainingGraph {
  const problem = onnxTrainingSupport(plan);
  if (problem) throw new Error(`cannot build an ONNX training graph: ${problem}`);
  const nodes: OnnxNodeSpec[] = [];
  const initializers: OnnxTensorSpec[] = [];
  let counter = 0;
  const fresh = (stem: string) => `${stem}_${counter++}`;
  const op = (type: string, inputs: string[], attributes?: OnnxNodeSpec['attributes'], outputs = 1): string[] => {
    const names = Array.from({ length: outputs }, () => fresh(type.toLowerCase()));
    nodes.push({ op: type, inputs, outputs: names, attributes });
    return names;
  };
  const one = (type: string, inputs: string[], attributes?: OnnxNodeSpec['attributes']) => op(type, inputs, attributes)[0];
  const constant = (name: string, data: Float32Array | BigInt64Array, dims: number[]) => {
    initializers.push({ name, dims, data });
    return name;
  };
  const axes = (name: string, values: number[]) => constant(name, BigInt64Array.from(values.map(BigInt)), [values.length]);
  const scalar = (name: string, value: number) => constant(name, Float32Array.of(value), []);
  // Declared on first use: onnxruntime warns about unused initializers.
  const shared = new Map<string, string>();
  const sharedAxes = (name: string, values: number[]) => shared.get(name) ?? (shared.set(name, axes(name, values)), name);
  const batchAxis = () => sharedAxes('axes_batch', [0]);
  const spatialAxes = () => sharedAxes('axes_nhw', [0, 2, 3]);

  const weights: WeightSlot[] = [];
  const slot = (variable: Variable, shape: readonly number[], convolution: boolean): WeightSlot => {
    const index = weights.length;
    const entry = { value: `w${index}`, firstMoment: `w${index}_m`, secondMoment: `w${index}_v`, shape, convolution, variable };
    weights.push(entry);
    return entry;
  };

  // Forward, taping what the backward pass needs: each entry maps the gradient of an op's output to
  // that of its input (undefined where nothing upstream needs it) and emits the weight gradients.
  const tape: ((gradient: string) => string | undefined)[] = [];
  const gradients = new Map<WeightSlot, string>();
  let a = one('Reshape', [TRAINING_INPUTS.x, axes('shape_input', [0, ...plan.inputShape])]);
  // The tensor's shape as the model sees it (no batch axis; images [H, W, C]) and how it is laid out.
  let shape = [...plan.inputShape];
  let layout: Layout = 'semantic';
  let first = true;
  // A ReLU right before a max pool runs after it (both monotone, so they commute), on a quarter of the values.
  let deferredRelu = false;
  const toLayout = (wanted: Layout) => {
    if (layout === wanted) return;
    const perm = wanted === 'nchw' ? [0, 3, 1, 2] : [0, 2, 3, 1];
    const inverse = wanted === 'nchw' ? [0, 2, 3, 1] : [0, 3, 1, 2];
    a = one('Transpose', [a], { perm });
    tape.push((g) => one('Transpose', [g], { perm: inverse }));
    layout = wanted;
  };
  const activate = (activation: StepActivation) => {
    if (activation !== 'relu') return;
    const out = one('Relu', [a]);
    tape.push((g) => one('Mul', [g, one('Sign', [out])]));
    a = out;
  };

  plan.steps.forEach((step, index) => {
    switch (step.kind) {
      case 'conv2d': {
        toLayout('nchw');
        const [kh, kw, cin, cout] = step.kernel.shape as [number, number, number, number];
        const kernel = slot(step.kernel, [cout, cin, kh, kw], true);
        const bias = step.bias ? slot(step.bias, [cout], false) : undefined;
        const pads = step.padding === 'same' ? samePads(kh, kw) : [0, 0, 0, 0];
        const input = a;
        const needsInput = !first;
        a = one('Conv', [input, kernel.value, ...(bias ? [bias.value] : [])], { kernel_shape: [kh, kw], pads });
        tape.push((g) => {
          // dW[o,i,·,·] = Σ_b input[b,i] ⋆ g[b,o]: a convolution with the batch as channels.
          const swapped = one('Conv', [one('Transpose', [input], { perm: [1, 0, 2, 3] }), one('Transpose', [g], { perm: [1, 0, 2, 3] })], { pads });
          gradients.set(kernel, one('Transpose', [swapped], { perm: [1, 0, 2, 3] }));
          if (bias) gradients.set(bias, one('ReduceSum', [g, spatialAxes()], { keepdims: 0 }));
          return needsInput ? one('ConvTranspose', [g, kernel.value], { kernel_shape: [kh, kw], pads }) : undefined;
        });
        shape = step.padding === 'same' ? [shape[0], shape[1], cout] : [shape[0] - kh + 1, shape[1] - kw + 1, cout];
        deferredRelu = step.activation === 'relu' && plan.steps[index + 1]?.kind === 'maxPool';
        if (!deferredRelu) activate(step.activation);
        first = false;
        break;
      }
      case 'maxPool': {
        toLayout('nchw');
        const input = a;
        const [ph, pw] = step.poolSize;
        const [height, width] = shape;
        if (height % ph === 0 && width % pw === 0) {
          // Windows tile the input: dx = [x = up(max)]·up(dy), as pool.ts (MaxPool's indices output is slow).
          a = one('MaxPool', [input], { kernel_shape: step.poolSize, strides: step.strides });
          const pooled = a;
          const scales = constant(fresh('scales'), Float32Array.of(1, 1, ph, pw), [4]);
          const up = (t: string) => one('Resize', [t, '', scales], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
          tape.push((g) => one('Mul', [one('Cast', [one('Equal', [input, up(pooled)])], { to: 1 }), up(g)]));
        } else {
          const [pooled, indices] = op('MaxPool', [input], { kernel_shape: step.poolSize, strides: step.strides }, 2);
          tape.push((g) => one('MaxUnpool', [g, indices, one('Shape', [input])], { kernel_shape: step.poolSize, strides: step.strides }));
          a = pooled;
        }
        shape = [Math.floor(height / ph), Math.floor(width / pw), shape[2]];
        if (deferredRelu) activate('relu');
        deferredRelu = false;
        break;
      }
      case 'reshape': {
        toLayout('semantic');
        const input = a;
        a = one('Reshape', [input, axes(fresh('shape'), [0, ...step.shape])]);
        tape.push((g) => one('Reshape', [g, one('Shape', [input])]));
        shape = [...step.shape];
        break;
      }
      case 'dense': {
        const [inputs, units] = step.kernel.shape as [number, number];
        const kernel = slot(step.kernel, [inputs, units], false);
        const bias = step.bias ? slot(step.bias, [units], false) : undefined;
        const input = a;
        const needsInput = !first;
        a = one('Gemm', [input, kernel.value, ...(bias ? [bias.value] : [])]);
        tape.push((g) => {
          gradients.set(kernel, one('Gemm', [input, g], { transA: 1 }));
          if (bias) gradients.set(bias, one('ReduceSum', [g, batchAxis()], { keepdims: 0 }));
          return needsInput ? one('Gemm', [g, kernel.value], { transB: 1 }) : undefined;
        });
        shape = [units];
        activate(step.activation);
        first = false;
        break;
      }
      case 'activation':
        activate(step.activation);
        break;
      case 'avgPool':
        throw new Error('unreachable: average pooling is not supported');
    }
  });

  // Soft-label cross-entropy, summed (the mean's gradient divides by the rows): ∂/∂z = (softmax(z)·Σt − t)/B.
  const logits = a;
  const targets = TRAINING_INPUTS.targets;
  nodes.push({ op: 'Neg', inputs: [one('ReduceSum', [one('Mul', [targets, one('LogSoftmax', [logits], { axis: 1 })])], { keepdims: 0 })], outputs: [TRAINING_OUTPUTS.lossSum] });
  const matches = one('Cast', [one('Equal', [one('ArgMax', [logits], { axis: 1 }), one('ArgMax', [targets], { axis: 1 })])], { to: 1 });
  nodes.push({ op: 'ReduceSum', inputs: [matches], outputs: [TRAINING_OUTPUTS.correct], attributes: { keepdims: 0 } });
  const targetMass = one('ReduceSum', [targets, axes('axes_class', [1])], { keepdims: 1 });
  let gradient: string | undefined = one('Div', [one('Sub', [one('Mul', [one('Softmax', [logits], { axis: 1 }), targetMass]), targets]), TRAINING_INPUTS.rows]);
  for (let i = tape.length - 1; i >= 0 && gradient !== undefined; i--) gradient = tape[i](gradient);

  // Adam, as tf.train.adam computes it: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
  // w ← w − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε).
  const beta1 = scalar('beta1', ADAM.beta1);
  const oneMinusBeta1 = scalar('one_minus_beta1', 1 - ADAM.beta1);
  const beta2 = scalar('beta2', ADAM.beta2);
  const oneMinusBeta2 = scalar('one_minus_beta2', 1 - ADAM.beta2);
  const epsilon = scalar('epsilon', ADAM.epsilon);
  for (const weight of weights) {
    const g = gradients.get(weight);
    if (!g) throw new Error(`no gradient reached ${weight.value}`);
    nodes.push({ op: 'Add', inputs: [one('Mul', [weight.firstMoment, beta1]), one('Mul', [g, oneMinusBeta1])], outputs: [weight.firstMoment + NEXT] });
    nodes.push({ op: 'Add', inputs: [one('Mul', [weight.secondMoment, beta2]), one('Mul', [one('Mul', [g, g]), oneMinusBeta2])], outputs: [weight.secondMoment + NEXT] });
    const corrected = one('Div', [weight.firstMoment + NEXT, TRAINING_INPUTS.oneMinusBeta1Power]);
    const scale = one('Add', [one('Sqrt', [one('Div', [weight.secondMoment + NEXT, TRAINING_INPUTS.oneMinusBeta2Power])]), epsilon]);
    nodes.push({ op: 'Sub', inputs: [weight.value, one('Mul', [one('Div', [corrected, scale]), TRAINING_INPUTS.learningRate])], outputs: [weight.value + NEXT] });
  }

  if (weights.length !== plan.variables.length) throw new Error(`the training graph covers ${weights.length} of the plan's ${plan.variables.length} variables`);
  const width = plan.inputShape.reduce((x, y) => x * y, 1);
  const stateInputs = weights.flatMap((w) => [w.value, w.firstMoment, w.secondMoment].map((name) => ({ name, shape: w.shape })));
  const spec: OnnxModelSpec = {
    name: 'training-step',
    inputs: [
      { name: TRAINING_INPUTS.x, shape: ['rows', width] },
      { name: TRAINING_INPUTS.targets, shape: ['rows', plan.classes] },
      ...[TRAINING_INPUTS.rows, TRAINING_INPUTS.learningRate, TRAINING_INPUTS.oneMinusBeta1Power, TRAINING_INPUTS.oneMinusBeta2Power].map((name) => ({ name, shape: [] })),
      ...stateInputs,
    ],
    outputs: [
      { name: TRAINING_OUTPUTS.lossSum, shape: [] },
      { name: TRAINING_OUTPUTS.correct, shape: [] },
      ...stateInputs.map(({ name, shape }) => ({ name: name + NEXT, shape })),
    ],
    nodes,
    initializers,
  };
  return { spec, weights };
}

/** ONNX pads [top, left, bottom, right] of a stride-1 'same' convolution (TensorFlow's split: the extra row last). */
function samePads(kh: number, kw: number): number[] {
  const top = Math.floor((kh - 1) / 2);
  const left = Math.floor((kw - 1) / 2);
  return [top, left, kh - 1 - top, kw - 1 - left];
}

/** A [kh, kw, in, out] kernel as ONNX's [out, in, kh, kw]. */
export function toOnnxKernel(values: Float32Array, shape: readonly number[]): Float32Array {
  const out = new Float32Array(values.length);
  forEachKernelEntry(shape, (model, onnx) => (out[onnx] = values[model]));
  return out;
}

/** The inverse of toOnnxKernel; `shape` is the model's [kh, kw, in, out]. */
export function fromOnnxKernel(values: Float32Array, shape: readonly number[]): Float32Array {
  const out = new Float32Array(values.length);
  forEachKernelEntry(shape, (model, onnx) => (out[model] = values[onnx]));
  return out;
}

/** Visits every kernel entry with its offset in the model's layout and in ONNX's. */
function forEachKernelEntry([kh, kw, cin, cout]: readonly number[], visit: (model: number, onnx: number) => void): void {
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < cin; i++) for (let o = 0; o < cout; o++) visit(((y * kw + x) * cin + i) * cout + o, ((o * cin + i) * kh + y) * kw + x);
}
