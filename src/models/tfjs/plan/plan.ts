/**
 * A functional view of a sequential layers model: its steps as plain tensor ops over the model's own
 * weight variables. Training, prediction and the Gram matrices run through it instead of the layers
 * API, which avoids the symbolic-graph overhead per call and exposes what the per-example gradient
 * trick needs (each layer's input and pre-activation). The model's weights stay the single source of
 * truth: the plan holds the very tf.Variables the model owns.
 */
import { UnsupportedModelError } from '../../errors.js';
import { conv2d } from './conv.js';
import { dense } from './matmul.js';
import { maxPoolForTraining } from './pool.js';
import { tf, type LayersModel, type Tensor, type Variable } from '../tf.js';

export type StepActivation = 'linear' | 'relu' | 'sigmoid' | 'tanh';

export interface DenseStep {
  readonly kind: 'dense';
  readonly kernel: Variable;
  readonly bias?: Variable;
  readonly activation: StepActivation;
}

export interface ConvStep {
  readonly kind: 'conv2d';
  readonly kernel: Variable;
  readonly bias?: Variable;
  readonly strides: [number, number];
  readonly padding: 'same' | 'valid';
  readonly activation: StepActivation;
}

export interface PoolStep {
  readonly kind: 'maxPool' | 'avgPool';
  readonly poolSize: [number, number];
  readonly strides: [number, number];
  readonly padding: 'same' | 'valid';
}

export interface ReshapeStep {
  readonly kind: 'reshape';
  /** Target shape without the batch axis. */
  readonly shape: readonly number[];
}

export interface ActivationStep {
  readonly kind: 'activation';
  readonly activation: StepActivation;
}

export type Step = DenseStep | ConvStep | PoolStep | ReshapeStep | ActivationStep;
export type ParametricStep = DenseStep | ConvStep;

export interface ModelPlan {
  readonly inputShape: readonly number[];
  readonly classes: number;
  readonly steps: readonly Step[];
  /** The trainable variables in model order (what the optimizer updates). */
  readonly variables: readonly Variable[];
}

/** Per parametric step: its input activation and its pre-activation output. */
export interface ForwardTrace {
  readonly inputs: Tensor[];
  readonly preActivations: Tensor[];
}

const plans = new WeakMap<LayersModel, ModelPlan>();

/** The model's plan (cached per model). Throws UnsupportedModelError naming the first unsupported layer. */
export function planOf(model: LayersModel): ModelPlan {
  const cached = plans.get(model);
  if (cached) return cached;
  const plan = buildPlan(model);
  plans.set(model, plan);
  return plan;
}

/** Whether planOf would succeed (the model is a chain of supported layers). */
export function hasPlan(model: LayersModel): boolean {
  try {
    planOf(model);
    return true;
  } catch (error) {
    if (error instanceof UnsupportedModelError) return false;
    throw error;
  }
}

function buildPlan(model: LayersModel): ModelPlan {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new UnsupportedModelError(`models with ${model.inputs.length} inputs and ${model.outputs.length} outputs are not supported; one of each is`);
  }
  const layers = model.layers.filter((layer) => layer.getClassName() !== 'InputLayer');
  assertChain(model, layers);
  const steps: Step[] = [];
  layers.forEach((layer, index) => {
    const config = layer.getConfig() as Record<string, unknown>;
    const className = layer.getClassName();
    const last = index === layers.length - 1;
    const where = `layer "${layer.name}" (${className})`;
    switch (className) {
      case 'Dense':
      case 'Conv2D': {
        const { kernel, bias } = weightsOf(layer, where);
        const { activation } = readActivation(config.activation, where, last);
        if (className === 'Dense') {
          steps.push({ kind: 'dense', kernel, bias, activation });
        } else {
          if (config.dataFormat !== undefined && config.dataFormat !== 'channelsLast')
            throw new UnsupportedModelError(`${where}: only channelsLast is supported`);
          const dilation = pair(config.dilationRate ?? 1, where);
          if (dilation[0] !== 1 || dilation[1] !== 1) throw new UnsupportedModelError(`${where}: dilated convolutions are not supported`);
          steps.push({ kind: 'conv2d', kernel, bias, strides: pair(config.strides ?? 1, where), padding: readPadding(config.padding, where), activation });
        }
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const poolSize = pair(config.poolSize ?? 2, where);
        steps.push({
          kind: className === 'MaxPooling2D' ? 'maxPool' : 'avgPool',
          poolSize,
          strides: config.strides == null ? poolSize : pair(config.strides, where),
          padding: readPadding(config.padding, where),
        });
        break;
      }
      case 'Flatten':
      case 'Reshape': {
        const shape = layer.outputShape as (number | null)[];
        const rest = shape.slice(1);
        if (!rest.every((d): d is number => typeof d === 'number')) throw new UnsupportedModelError(`${where}: output shape must be fixed`);
        steps.push({ kind: 'reshape', shape: rest });
        break;
      }
      case 'Activation': {
        const { activation, softmax } = readActivation(config.activation, where, last);
        if (!softmax) steps.push({ kind: 'activation', activation });
        break;
      }
      default:
        throw new UnsupportedModelError(`${where} is not supported; supported: Dense, Conv2D, MaxPooling2D, AveragePooling2D, Flatten, Reshape, Activation`);
    }
  });
  const inputShape = model.inputs[0].shape.slice(1);
  if (!inputShape.every((d): d is number => typeof d === 'number')) throw new UnsupportedModelError('the model’s input shape must be fixed');
  const outShape = model.outputs[0].shape;
  const classes = outShape[outShape.length - 1];
  if (typeof classes !== 'number' || outShape.length !== 2) throw new UnsupportedModelError('the model must output one vector of class scores per input');
  const variables = model.trainableWeights.map((w) => w.read() as Variable);
  return { inputShape, classes, steps, variables };
}

function assertChain(model: LayersModel, layers: readonly { name: string; inboundNodes: { inboundLayers: { name: string }[] }[] }[]): void {
  if (model.getClassName() === 'Sequential') return;
  for (let i = 1; i < layers.length; i++) {
    const inbound = layers[i].inboundNodes;
    if (inbound.length !== 1 || inbound[0].inboundLayers.length !== 1 || inbound[0].inboundLayers[0].name !== layers[i - 1].name) {
      throw new UnsupportedModelError(`layer "${layers[i].name}" does not simply follow "${layers[i - 1].name}"; only chains of layers are supported`);
    }
  }
}

function weightsOf(layer: LayersModel['layers'][number], where: string): { kernel: Variable; bias?: Variable } {
  let kernel: Variable | undefined;
  let bias: Variable | undefined;
  for (const weight of layer.weights) {
    if (!weight.trainable) throw new UnsupportedModelError(`${where}: frozen weights are not supported`);
    if (/kernel(_\d+)?$/.test(weight.originalName)) kernel = weight.read() as Variable;
    else if (/bias(_\d+)?$/.test(weight.originalName)) bias = weight.read() as Variable;
    else throw new UnsupportedModelError(`${where}: unexpected weight ${weight.originalName}`);
  }
  if (!kernel) throw new UnsupportedModelError(`${where}: no kernel weight`);
  return { kernel, bias };
}

function readActivation(value: unknown, where: string, last: boolean): { activation: StepActivation; softmax: boolean } {
  const name = value == null ? 'linear' : String(value);
  // A final softmax is dropped: the plan's output is always logits.
  if (name === 'softmax' && last) return { activation: 'linear', softmax: true };
  if (name === 'linear' || name === 'relu' || name === 'sigmoid' || name === 'tanh') return { activation: name, softmax: false };
  throw new UnsupportedModelError(`${where}: activation "${name}" is not supported${name === 'softmax' ? ' except on the last layer' : ''}`);
}

function readPadding(value: unknown, where: string): 'same' | 'valid' {
  if (value === undefined || value === 'valid') return 'valid';
  if (value === 'same') return 'same';
  throw new UnsupportedModelError(`${where}: padding "${String(value)}" is not supported`);
}

function pair(value: unknown, where: string): [number, number] {
  if (typeof value === 'number') return [value, value];
  if (Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === 'number')) return [value[0], value[1]];
  throw new UnsupportedModelError(`${where}: cannot read ${JSON.stringify(value)} as a pair of integers`);
}

export function activate(x: Tensor, activation: StepActivation): Tensor {
  switch (activation) {
    case 'relu':
      return tf.relu(x);
    case 'sigmoid':
      return tf.sigmoid(x);
    case 'tanh':
      return tf.tanh(x);
    default:
      return x;
  }
}

export interface ForwardOptions {
  /** Record each parametric step's input and pre-activation. */
  trace?: ForwardTrace;
  /** Added to each parametric step's pre-activation: zeros whose gradients are the errors δ. */
  offsets?: readonly Tensor[];
  /** The result will be differentiated (training, Jacobians): use the ops whose gradients are fast. */
  differentiable?: boolean;
  /** The input itself will be differentiated (adversarial steps, Jacobian augmentation). */
  inputGradient?: boolean;
}

/**
 * Logits for a batch `x` ([B, ...inputShape] or [B, D]). Call inside tf.tidy. The input itself is
 * differentiated only with `inputGradient`; otherwise only the weights and (with offsets) the
 * pre-activations are.
 */
export function forwardLogits(plan: ModelPlan, x: Tensor, options: ForwardOptions = {}): Tensor {
  let a: Tensor = x.reshape([x.shape[0], ...plan.inputShape]);
  let parametric = 0;
  const unfused = Boolean(options.trace || options.offsets || options.differentiable || options.inputGradient);
  // Training only: max pooling commutes with ReLU (both monotone), so a ReLU followed by a pool runs
  // as pool then ReLU, on a tensor a quarter the size, and the pool's gradient sees no ReLU zeros.
  const reorder = Boolean(options.differentiable && !options.trace && !options.offsets);
  let deferredRelu = false;
  plan.steps.forEach((step, index) => {
    switch (step.kind) {
      case 'dense':
      case 'conv2d': {
        if (!unfused) {
          a = step.kind === 'dense' ? denseFused(step, a) : convFused(step, a);
        } else {
          // The first parametric step sees only data, whose gradient nothing needs (unless asked for).
          const needsInput = parametric > 0 || options.inputGradient === true;
          let z =
            step.kind === 'dense' ? dense(a, step.kernel, step.bias, needsInput) : conv2d(a, step.kernel, step.bias, step.strides, step.padding, needsInput);
          const offset = options.offsets?.[parametric];
          if (offset) z = tf.add(z, offset);
          options.trace?.inputs.push(a);
          options.trace?.preActivations.push(z);
          deferredRelu = reorder && step.activation === 'relu' && plan.steps[index + 1]?.kind === 'maxPool';
          a = deferredRelu ? z : activate(z, step.activation);
        }
        parametric++;
        break;
      }
      case 'maxPool':
        if (options.differentiable) {
          a = maxPoolForTraining(a, step.poolSize, step.strides, step.padding);
          if (deferredRelu) a = tf.relu(a);
          deferredRelu = false;
        } else a = tf.maxPool(a as tf.Tensor4D, step.poolSize, step.strides, step.padding);
        break;
      case 'avgPool':
        a = tf.avgPool(a as tf.Tensor4D, step.poolSize, step.strides, step.padding);
        break;
      case 'reshape':
        a = a.reshape([a.shape[0], ...step.shape]);
        break;
      case 'activation':
        a = activate(a, step.activation);
        break;
    }
  });
  return a;
}

function denseFused(step: DenseStep, a: Tensor): Tensor {
  const activation = step.activation === 'tanh' ? 'linear' : step.activation;
  const out = tf.fused.matMul({ a: a as tf.Tensor2D, b: step.kernel as tf.Tensor as tf.Tensor2D, bias: step.bias, activation });
  return step.activation === 'tanh' ? tf.tanh(out) : out;
}

function convFused(step: ConvStep, a: Tensor): Tensor {
  const activation = step.activation === 'tanh' ? 'linear' : step.activation;
  const out = tf.fused.conv2d({
    x: a as tf.Tensor4D,
    filter: step.kernel as tf.Tensor as tf.Tensor4D,
    strides: step.strides,
    pad: step.padding,
    bias: step.bias,
    activation,
  });
  return step.activation === 'tanh' ? tf.tanh(out) : out;
}
