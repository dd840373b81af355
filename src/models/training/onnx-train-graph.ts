/**
 * One training step of a model plan as an ONNX graph: forward pass, soft-label cross-entropy, the
 * backward pass written out by hand, and Adam's update, so that onnxruntime (native, vectorised
 * convolutions) runs the whole step. Inputs: the batch, the Adam state of every weight; outputs: the
 * new state, the summed loss and the number of top-1 matches. Convolutions run in ONNX's NCHW layout
 * with kernels as [out, in, kh, kw]; `toOnnxKernel` / `fromOnnxKernel` convert the model's.
 *
 * Only what the project's architectures use is covered (dense and stride-1 convolutions with ReLU or
 * no activation, non-overlapping max pooling, reshapes); `onnxTrainingSupport` says why a plan is not.
 * Each step kind's forward and backward nodes are in onnx-train-steps.ts (STEP_CONVERTERS); this file
 * adds the loss, runs the backward pass and writes Adam's update.
 */
import type { OnnxModelSpec } from '../onnx/writer.js';
import type { ModelPlan, StepActivation } from '../tfjs/plan/plan.js';
import { convertStep, ForwardPass, type WeightSlot } from './onnx-train-steps.js';

export type { WeightSlot };

/** Adam's constants, as tf.train.adam uses them (epsilon is tfjs's float32 epsilon). */
export const ADAM = { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 } as const;

export interface TrainingGraph {
  readonly spec: OnnxModelSpec;
  /** Per trainable variable: its input names (outputs add NEXT) and the variable. */
  readonly weights: readonly WeightSlot[];
}

/** Feed names besides the weights. */
export const TRAINING_INPUTS = {
  x: 'x',
  targets: 'targets',
  rows: 'rows',
  learningRate: 'learning_rate',
  oneMinusBeta1Power: 'one_minus_beta1_power',
  oneMinusBeta2Power: 'one_minus_beta2_power',
} as const;
export const TRAINING_OUTPUTS = { lossSum: 'loss_sum', correct: 'correct' } as const;
export const NEXT = '_next';

/** Why `plan` cannot train on onnxruntime, or undefined when it can. */
export function onnxTrainingSupport(plan: ModelPlan): string | undefined {
  let rank = plan.inputShape.length;
  for (const step of plan.steps) {
    if ((step.kind === 'dense' || step.kind === 'conv2d' || step.kind === 'activation') && !supportedActivation(step.activation))
      return `activation ${step.activation}`;
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

/** The ONNX graph of one training step of `plan` (check onnxTrainingSupport first). */
export function buildTrainingGraph(plan: ModelPlan): TrainingGraph {
  const problem = onnxTrainingSupport(plan);
  if (problem) throw new Error(`cannot build an ONNX training graph: ${problem}`);
  const pass = new ForwardPass(plan, TRAINING_INPUTS.x);
  plan.steps.forEach((step, index) => convertStep(step, pass, plan.steps[index + 1]));
  pass.runBackward(lossAndGradient(pass));
  adamUpdates(pass);
  if (pass.weights.length !== plan.variables.length)
    throw new Error(`the training graph covers ${pass.weights.length} of the plan's ${plan.variables.length} variables`);
  return { spec: trainingSpec(plan, pass), weights: pass.weights };
}

/**
 * Soft-label cross-entropy, summed, and the number of top-1 matches as outputs; returns the logits'
 * gradient of the mean loss (it divides by the rows): ∂/∂z = (softmax(z)·Σt − t)/B.
 */
function lossAndGradient(pass: ForwardPass): string {
  const { graph } = pass;
  const logits = pass.value;
  const targets = TRAINING_INPUTS.targets;
  graph.nodes.push({
    op: 'Neg',
    inputs: [pass.one('ReduceSum', [pass.one('Mul', [targets, pass.one('LogSoftmax', [logits], { axis: 1 })])], { keepdims: 0 })],
    outputs: [TRAINING_OUTPUTS.lossSum],
  });
  const matches = pass.one('Cast', [pass.one('Equal', [pass.one('ArgMax', [logits], { axis: 1 }), pass.one('ArgMax', [targets], { axis: 1 })])], { to: 1 });
  graph.nodes.push({ op: 'ReduceSum', inputs: [matches], outputs: [TRAINING_OUTPUTS.correct], attributes: { keepdims: 0 } });
  const targetMass = pass.one('ReduceSum', [targets, pass.axes('axes_class', [1])], { keepdims: 1 });
  return pass.one('Div', [pass.one('Sub', [pass.one('Mul', [pass.one('Softmax', [logits], { axis: 1 }), targetMass]), targets]), TRAINING_INPUTS.rows]);
}

/**
 * Adam, as tf.train.adam computes it: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 * w ← w − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε).
 */
function adamUpdates(pass: ForwardPass): void {
  const { graph } = pass;
  const scalar = (name: string, value: number) => graph.initializer(name, [], Float32Array.of(value));
  const beta1 = scalar('beta1', ADAM.beta1);
  const oneMinusBeta1 = scalar('one_minus_beta1', 1 - ADAM.beta1);
  const beta2 = scalar('beta2', ADAM.beta2);
  const oneMinusBeta2 = scalar('one_minus_beta2', 1 - ADAM.beta2);
  const epsilon = scalar('epsilon', ADAM.epsilon);
  for (const weight of pass.weights) {
    const g = pass.gradients.get(weight);
    if (!g) throw new Error(`no gradient reached ${weight.value}`);
    graph.nodes.push({
      op: 'Add',
      inputs: [pass.one('Mul', [weight.firstMoment, beta1]), pass.one('Mul', [g, oneMinusBeta1])],
      outputs: [weight.firstMoment + NEXT],
    });
    graph.nodes.push({
      op: 'Add',
      inputs: [pass.one('Mul', [weight.secondMoment, beta2]), pass.one('Mul', [pass.one('Mul', [g, g]), oneMinusBeta2])],
      outputs: [weight.secondMoment + NEXT],
    });
    const corrected = pass.one('Div', [weight.firstMoment + NEXT, TRAINING_INPUTS.oneMinusBeta1Power]);
    const scale = pass.one('Add', [pass.one('Sqrt', [pass.one('Div', [weight.secondMoment + NEXT, TRAINING_INPUTS.oneMinusBeta2Power])]), epsilon]);
    graph.nodes.push({
      op: 'Sub',
      inputs: [weight.value, pass.one('Mul', [pass.one('Div', [corrected, scale]), TRAINING_INPUTS.learningRate])],
      outputs: [weight.value + NEXT],
    });
  }
}

/** The step's inputs (batch, scalars, every weight's state) and outputs (loss, matches, the new state). */
function trainingSpec(plan: ModelPlan, pass: ForwardPass): OnnxModelSpec {
  const width = plan.inputShape.reduce((x, y) => x * y, 1);
  const stateInputs = pass.weights.flatMap((w) => [w.value, w.firstMoment, w.secondMoment].map((name) => ({ name, shape: w.shape })));
  return {
    name: 'training-step',
    inputs: [
      { name: TRAINING_INPUTS.x, shape: ['rows', width] },
      { name: TRAINING_INPUTS.targets, shape: ['rows', plan.classes] },
      ...[TRAINING_INPUTS.rows, TRAINING_INPUTS.learningRate, TRAINING_INPUTS.oneMinusBeta1Power, TRAINING_INPUTS.oneMinusBeta2Power].map((name) => ({
        name,
        shape: [],
      })),
      ...stateInputs,
    ],
    outputs: [
      { name: TRAINING_OUTPUTS.lossSum, shape: [] },
      { name: TRAINING_OUTPUTS.correct, shape: [] },
      ...stateInputs.map(({ name, shape }) => ({ name: name + NEXT, shape })),
    ],
    nodes: pass.graph.nodes,
    initializers: pass.graph.initializers,
  };
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
