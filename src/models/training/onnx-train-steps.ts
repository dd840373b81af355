/**
 * The forward pass of one training step as ONNX nodes, one converter per plan step kind
 * (STEP_CONVERTERS), each taping its own backward pass: an entry maps the gradient of the step's
 * output to that of its input (undefined where nothing upstream needs it) and records the gradients
 * of the step's weights. onnx-train-graph.ts adds the loss, runs the tape backwards and writes
 * Adam's update.
 *
 * Convolutions and pooling run in ONNX's NCHW layout; dense layers and reshapes see the model's own
 * ('semantic') layout. A transpose is inserted (and taped) where the layout changes.
 */
import { OnnxGraphBuilder } from '../onnx/graph-builder.js';
import type { OnnxNodeSpec } from '../onnx/writer.js';
import type { ConvStep, DenseStep, ModelPlan, PoolStep, ReshapeStep, Step, StepActivation } from '../tfjs/plan/plan.js';
import type { Variable } from '../tfjs/tf.js';

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

type Layout = 'nchw' | 'semantic';

/** The gradient of a step's output → that of its input (undefined: nothing upstream needs it). */
type BackwardEntry = (gradient: string) => string | undefined;

/** The training graph while its forward pass is written: the graph, the current value and its shape, the tape. */
export class ForwardPass {
  readonly graph = new OnnxGraphBuilder();
  readonly weights: WeightSlot[] = [];
  readonly gradients = new Map<WeightSlot, string>();
  /** The current value: the output of the last step written. */
  value: string;
  /** Its shape as the model sees it (no batch axis; images [H, W, C]). */
  shape: number[];
  layout: Layout = 'semantic';
  /** No parametric step written yet: the first one needs no input gradient. */
  first = true;
  /** A ReLU right before a max pool runs after it (both monotone, so they commute), on a quarter of the values. */
  deferredRelu = false;
  private readonly tape: BackwardEntry[] = [];
  // Declared on first use: onnxruntime warns about unused initializers.
  private readonly shared = new Map<string, string>();

  /** Starts from the batch input `x` (rows × width) reshaped to the plan's input shape. */
  constructor(plan: ModelPlan, x: string) {
    this.value = this.one('Reshape', [x, this.axes('shape_input', [0, ...plan.inputShape])]);
    this.shape = [...plan.inputShape];
  }

  /** One node, one output. */
  one(type: string, inputs: string[], attributes?: OnnxNodeSpec['attributes']): string {
    return this.graph.node(type, inputs, attributes);
  }

  /** An int64 initializer named `name`. */
  axes(name: string, values: number[]): string {
    return this.graph.initializer(name, [values.length], BigInt64Array.from(values.map(BigInt)));
  }

  batchAxis(): string {
    return this.sharedAxes('axes_batch', [0]);
  }

  spatialAxes(): string {
    return this.sharedAxes('axes_nhw', [0, 2, 3]);
  }

  private sharedAxes(name: string, values: number[]): string {
    return this.shared.get(name) ?? (this.shared.set(name, this.axes(name, values)), name);
  }

  /** A trainable variable's slot: its input names in the graph. */
  slot(variable: Variable, shape: readonly number[], convolution: boolean): WeightSlot {
    const index = this.weights.length;
    const entry = { value: `w${index}`, firstMoment: `w${index}_m`, secondMoment: `w${index}_v`, shape, convolution, variable };
    this.weights.push(entry);
    return entry;
  }

  /** Tapes a step's backward pass. */
  backward(entry: BackwardEntry): void {
    this.tape.push(entry);
  }

  /** Runs the tape from the last step to the first, starting from the logits' gradient. */
  runBackward(gradient: string): void {
    let g: string | undefined = gradient;
    for (let i = this.tape.length - 1; i >= 0 && g !== undefined; i--) g = this.tape[i](g);
  }

  toLayout(wanted: Layout): void {
    if (this.layout === wanted) return;
    const perm = wanted === 'nchw' ? [0, 3, 1, 2] : [0, 2, 3, 1];
    const inverse = wanted === 'nchw' ? [0, 2, 3, 1] : [0, 3, 1, 2];
    this.value = this.one('Transpose', [this.value], { perm });
    this.backward((g) => this.one('Transpose', [g], { perm: inverse }));
    this.layout = wanted;
  }

  activate(activation: StepActivation): void {
    if (activation !== 'relu') return;
    const out = this.one('Relu', [this.value]);
    this.backward((g) => this.one('Mul', [g, this.one('Sign', [out])]));
    this.value = out;
  }
}

/** Writes one plan step (and tapes its backward pass); `next` is the step after it. */
export type StepConverter<S extends Step> = (step: S, pass: ForwardPass, next: Step | undefined) => void;

/** The step type(s) of kind K (PoolStep is both maxPool and avgPool). */
type StepOfKind<K extends Step['kind'], S extends Step = Step> = S extends { kind: infer SK } ? (K extends SK ? S : never) : never;

const conv2d: StepConverter<ConvStep> = (step, pass, next) => {
  pass.toLayout('nchw');
  const [kh, kw, cin, cout] = step.kernel.shape as [number, number, number, number];
  const kernel = pass.slot(step.kernel, [cout, cin, kh, kw], true);
  const bias = step.bias ? pass.slot(step.bias, [cout], false) : undefined;
  const pads = step.padding === 'same' ? samePads(kh, kw) : [0, 0, 0, 0];
  const input = pass.value;
  const needsInput = !pass.first;
  pass.value = pass.one('Conv', [input, kernel.value, ...(bias ? [bias.value] : [])], { kernel_shape: [kh, kw], pads });
  pass.backward((g) => {
    // dW[o,i,·,·] = Σ_b input[b,i] ⋆ g[b,o]: a convolution with the batch as channels.
    const swapped = pass.one('Conv', [pass.one('Transpose', [input], { perm: [1, 0, 2, 3] }), pass.one('Transpose', [g], { perm: [1, 0, 2, 3] })], { pads });
    pass.gradients.set(kernel, pass.one('Transpose', [swapped], { perm: [1, 0, 2, 3] }));
    if (bias) pass.gradients.set(bias, pass.one('ReduceSum', [g, pass.spatialAxes()], { keepdims: 0 }));
    return needsInput ? pass.one('ConvTranspose', [g, kernel.value], { kernel_shape: [kh, kw], pads }) : undefined;
  });
  const shape = pass.shape;
  pass.shape = step.padding === 'same' ? [shape[0], shape[1], cout] : [shape[0] - kh + 1, shape[1] - kw + 1, cout];
  pass.deferredRelu = step.activation === 'relu' && next?.kind === 'maxPool';
  if (!pass.deferredRelu) pass.activate(step.activation);
  pass.first = false;
};

const maxPool: StepConverter<PoolStep> = (step, pass) => {
  pass.toLayout('nchw');
  const input = pass.value;
  const [ph, pw] = step.poolSize;
  const [height, width] = pass.shape;
  if (height % ph === 0 && width % pw === 0) {
    // Windows tile the input: dx = [x = up(max)]·up(dy), as tfjs/plan/pool.ts (MaxPool's indices output is slow).
    pass.value = pass.one('MaxPool', [input], { kernel_shape: step.poolSize, strides: step.strides });
    const pooled = pass.value;
    const scales = pass.graph.initializer(pass.graph.fresh('scales'), [4], Float32Array.of(1, 1, ph, pw));
    const up = (t: string) => pass.one('Resize', [t, '', scales], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
    pass.backward((g) => pass.one('Mul', [pass.one('Cast', [pass.one('Equal', [input, up(pooled)])], { to: 1 }), up(g)]));
  } else {
    const [pooled, indices] = pass.graph.nodeOutputs('MaxPool', [input], { kernel_shape: step.poolSize, strides: step.strides }, 2);
    pass.backward((g) => pass.one('MaxUnpool', [g, indices, pass.one('Shape', [input])], { kernel_shape: step.poolSize, strides: step.strides }));
    pass.value = pooled;
  }
  pass.shape = [Math.floor(height / ph), Math.floor(width / pw), pass.shape[2]];
  if (pass.deferredRelu) pass.activate('relu');
  pass.deferredRelu = false;
};

const reshape: StepConverter<ReshapeStep> = (step, pass) => {
  pass.toLayout('semantic');
  const input = pass.value;
  pass.value = pass.one('Reshape', [input, pass.axes(pass.graph.fresh('shape'), [0, ...step.shape])]);
  pass.backward((g) => pass.one('Reshape', [g, pass.one('Shape', [input])]));
  pass.shape = [...step.shape];
};

const dense: StepConverter<DenseStep> = (step, pass) => {
  const [inputs, units] = step.kernel.shape as [number, number];
  const kernel = pass.slot(step.kernel, [inputs, units], false);
  const bias = step.bias ? pass.slot(step.bias, [units], false) : undefined;
  const input = pass.value;
  const needsInput = !pass.first;
  pass.value = pass.one('Gemm', [input, kernel.value, ...(bias ? [bias.value] : [])]);
  pass.backward((g) => {
    pass.gradients.set(kernel, pass.one('Gemm', [input, g], { transA: 1 }));
    if (bias) pass.gradients.set(bias, pass.one('ReduceSum', [g, pass.batchAxis()], { keepdims: 0 }));
    return needsInput ? pass.one('Gemm', [g, kernel.value], { transB: 1 }) : undefined;
  });
  pass.shape = [units];
  pass.activate(step.activation);
  pass.first = false;
};

/** The converter of each plan step kind (average pooling is refused by onnxTrainingSupport before any is called). */
export const STEP_CONVERTERS: { readonly [K in Step['kind']]: StepConverter<StepOfKind<K>> } = {
  conv2d,
  maxPool,
  reshape,
  dense,
  activation: (step, pass) => pass.activate(step.activation),
  avgPool: () => {
    throw new Error('unreachable: average pooling is not supported');
  },
};

/** Writes `step` through its converter. */
export function convertStep(step: Step, pass: ForwardPass, next: Step | undefined): void {
  (STEP_CONVERTERS[step.kind] as StepConverter<Step>)(step, pass, next);
}

/** ONNX pads [top, left, bottom, right] of a stride-1 'same' convolution (TensorFlow's split: the extra row last). */
function samePads(kh: number, kw: number): number[] {
  const top = Math.floor((kh - 1) / 2);
  const left = Math.floor((kw - 1) / 2);
  return [top, left, kh - 1 - top, kw - 1 - left];
}
