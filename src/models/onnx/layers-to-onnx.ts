/**
 * A TF.js layers model (sequential or functional) written as an ONNX graph, forward only, so that
 * onnxruntime-node runs it: a MobileNetV2 costs 5–7 ms per image there against 64–82 ms on
 * tfjs-wasm on this machine (bench/models-surrogates.ts). The weights are the model's own (trained,
 * or re-initialised by reinit.ts before the conversion).
 *
 * TF.js is NHWC; ONNX's convolutions are NCHW. The input image is transposed once, 4-D tensors stay
 * NCHW inside, and go back to NHWC before a Flatten (whose element order is TF's) or at the output.
 * TF's 'same' padding puts the odd pixel at the end; the pads are written out from the static image
 * size (onnxruntime refuses auto_pad with dilations). Layers outside the supported set are refused
 * naming the layer; nothing is approximated.
 */
import { UnsupportedModelError } from './errors.js';
import type { LayersModel } from './tf.js';
import { writeOnnxModel, type OnnxNodeSpec, type OnnxTensorSpec } from './onnx-writer.js';

/** The layer classes converted (inference-time identities included). */
export const ONNX_CONVERTIBLE_LAYERS = [
  'InputLayer', 'Conv2D', 'DepthwiseConv2D', 'SeparableConv2D', 'Dense', 'BatchNormalization', 'ReLU', 'Activation',
  'Add', 'Multiply', 'Average', 'Maximum', 'Minimum', 'Concatenate', 'ZeroPadding2D', 'MaxPooling2D',
  'AveragePooling2D', 'GlobalAveragePooling2D', 'GlobalMaxPooling2D', 'Flatten', 'Dropout', 'SpatialDropout1D',
  'GaussianNoise', 'GaussianDropout', 'AlphaDropout',
] as const;

const IDENTITIES = new Set(['Dropout', 'SpatialDropout1D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout']);
const MERGES: Readonly<Record<string, string>> = { Add: 'Add', Multiply: 'Mul', Maximum: 'Max', Minimum: 'Min', Average: 'Sum' };

/** A value in the graph: its name, rank, and whether a 4-D value is held NCHW (TF's NHWC transposed), with its height and width then. */
interface Value {
  name: string;
  rank: number;
  nchw: boolean;
  h?: number;
  w?: number;
}

interface LayerConfig {
  class_name: string;
  name?: string;
  config: Record<string, unknown>;
  inbound_nodes?: unknown[];
}

type Weights = Float32Array[];

/** The ONNX bytes of `model` (input `input` [batch, ...], output `output`). Throws UnsupportedModelError naming a layer it cannot convert. */
export function layersModelToOnnx(model: LayersModel): Uint8Array {
  const json = model.toJSON(undefined, false) as unknown as { class_name: string; config: { layers: LayerConfig[]; input_layers?: unknown[][]; output_layers?: unknown[][] } };
  if (model.inputs.length !== 1 || model.outputs.length !== 1) throw new UnsupportedModelError(`${model.name}: one input and one output are converted to ONNX; the model has ${model.inputs.length} and ${model.outputs.length}`);
  const inputShape = model.inputs[0].shape.slice(1);
  if (!inputShape.every((d): d is number => typeof d === 'number' && d > 0)) throw new UnsupportedModelError(`${model.name}: the input shape ${JSON.stringify(model.inputs[0].shape)} has open dimensions besides the batch`);
  const outputShape = model.outputs[0].shape;

  const nodes: OnnxNodeSpec[] = [];
  const initializers: OnnxTensorSpec[] = [];
  let counter = 0;
  const fresh = (base: string) => `${base}_${counter++}`;
  const constant = (base: string, dims: number[], data: Float32Array | BigInt64Array): string => {
    const name = fresh(base);
    initializers.push({ name, dims, data });
    return name;
  };
  const node = (op: string, inputs: string[], attributes?: OnnxNodeSpec['attributes'], base = op.toLowerCase()): string => {
    const output = fresh(base);
    nodes.push({ op, inputs, outputs: [output], attributes });
    return output;
  };
  const zero = constant('zero', [], Float32Array.of(0));

  const values = new Map<string, Value>();
  let input: Value = { name: 'input', rank: inputShape.length + 1, nchw: false };
  if (input.rank === 4) input = { name: node('Transpose', ['input'], { perm: [0, 3, 1, 2] }, 'input_nchw'), rank: 4, nchw: true, h: inputShape[0], w: inputShape[1] };

  const sequential = json.class_name === 'Sequential';
  const layers = json.config.layers;
  let previous: Value = input;
  for (const [index, config] of layers.entries()) {
    const className = config.class_name;
    const name = (config.config.name as string | undefined) ?? config.name ?? `layer ${index}`;
    const refuse = (why: string): never => {
      throw new UnsupportedModelError(`layer "${name}" (${className}): ${why}; the ONNX engine converts ${ONNX_CONVERTIBLE_LAYERS.join(', ')} (use engine 'tfjs' for this model)`);
    };
    if (className === 'InputLayer') {
      values.set(name, input);
      previous = input;
      continue;
    }
    if (!(ONNX_CONVERTIBLE_LAYERS as readonly string[]).includes(className)) refuse('not supported');
    const inbound = sequential ? [previous] : inboundValues(config, values, refuse);
    const layer = model.getLayer(name);
    const weights: Weights = layer.getWeights().map((w) => w.dataSync() as Float32Array);
    const shapes = layer.getWeights().map((w) => w.shape);
    const c = config.config;
    if (c.data_format !== undefined && c.data_format !== 'channels_last') refuse(`data_format ${String(c.data_format)} (only channels_last, TF.js's default)`);
    const single = (): Value => {
      if (inbound.length !== 1) refuse(`takes one input, got ${inbound.length}`);
      return inbound[0];
    };
    const spatial = (): Value => {
      const x = single();
      if (!x.nchw) refuse(`needs a 4-D image tensor, got rank ${x.rank}`);
      return x;
    };
    /** Explicit pads and the output size of a window op on `x` (TF's 'same': the odd pixel at the end). */
    const windowed = (x: Value, kernel: number[], strides: number[], dilations: number[]): { pads: number[]; h: number; w: number } => {
      if (c.padding !== 'same' && c.padding !== 'valid') refuse(`padding ${String(c.padding)}`);
      const sizes = [x.h!, x.w!];
      const begin: number[] = [];
      const end: number[] = [];
      const out = sizes.map((size, i) => {
        const span = (kernel[i] - 1) * dilations[i] + 1;
        if (c.padding === 'valid') {
          begin.push(0);
          end.push(0);
          return Math.floor((size - span) / strides[i]) + 1;
        }
        const length = Math.ceil(size / strides[i]);
        const total = Math.max((length - 1) * strides[i] + span - size, 0);
        begin.push(Math.floor(total / 2));
        end.push(total - Math.floor(total / 2));
        return length;
      });
      if (out.some((d) => d < 1)) refuse(`its window does not fit the ${x.h}×${x.w} input`);
      return { pads: [...begin, ...end], h: out[0], w: out[1] };
    };
    const pair = (v: unknown, what: string): number[] => {
      const p = typeof v === 'number' ? [v, v] : Array.isArray(v) && v.length === 2 ? (v as number[]) : refuse(`${what} ${JSON.stringify(v)}`);
      return p.map(Number);
    };
    const activate = (x: Value, activation: unknown): Value => ({ ...x, name: activationNode(activation as string | undefined, x, refuse) });
    const activationNode = (activation: string | undefined, x: Value, fail: (why: string) => never): string => {
      switch (activation ?? 'linear') {
        case 'linear':
          return x.name;
        case 'relu':
          return node('Relu', [x.name]);
        case 'relu6':
          return node('Clip', [x.name, zero, constant('six', [], Float32Array.of(6))]);
        case 'sigmoid':
          return node('Sigmoid', [x.name]);
        case 'tanh':
          return node('Tanh', [x.name]);
        case 'elu':
          return node('Elu', [x.name], { alpha: { f: 1 } });
        case 'selu':
          return node('Selu', [x.name]);
        case 'softplus':
          return node('Softplus', [x.name]);
        case 'softsign':
          return node('Softsign', [x.name]);
        case 'hardSigmoid':
        case 'hard_sigmoid':
          return node('HardSigmoid', [x.name], { alpha: { f: 0.2 }, beta: { f: 0.5 } });
        case 'swish':
        case 'silu':
          return node('Mul', [x.name, node('Sigmoid', [x.name])]);
        case 'softmax':
          // TF's softmax runs over the last axis: the channels, at axis 1 of an NCHW value.
          return node('Softmax', [x.name], { axis: x.nchw ? 1 : -1 });
        default:
          return fail(`activation ${String(activation)}`);
      }
    };
    const convolution = (x: Value, kernel: string, bias: string | undefined, kernelSize: number[], group: number): Value => {
      const strides = pair(c.strides ?? 1, 'strides');
      const dilations = pair(c.dilation_rate ?? 1, 'dilation_rate');
      const { pads, h, w } = windowed(x, kernelSize, strides, dilations);
      const out = node('Conv', bias ? [x.name, kernel, bias] : [x.name, kernel], { kernel_shape: kernelSize, strides, dilations, group, pads });
      return { name: out, rank: 4, nchw: true, h, w };
    };
    const biasOf = (useBias: unknown, at: number, channels: number): string | undefined =>
      useBias === false ? undefined : constant(`${name}_bias`, [channels], weights[at]);

    let out: Value;
    if (IDENTITIES.has(className)) out = single();
    else if (className === 'Conv2D') {
      const x = spatial();
      const [kh, kw, cin, cout] = shapes[0];
      const kernel = constant(`${name}_kernel`, [cout, cin, kh, kw], transposeKernel(weights[0], kh, kw, cin, cout));
      out = activate(convolution(x, kernel, biasOf(c.use_bias, 1, cout), [kh, kw], 1), c.activation);
    } else if (className === 'DepthwiseConv2D') {
      const x = spatial();
      const [kh, kw, cin, multiplier] = shapes[0];
      const kernel = constant(`${name}_kernel`, [cin * multiplier, 1, kh, kw], depthwiseKernel(weights[0], kh, kw, cin, multiplier));
      out = activate(convolution(x, kernel, biasOf(c.use_bias, 1, cin * multiplier), [kh, kw], cin), c.activation);
    } else if (className === 'SeparableConv2D') {
      const x = spatial();
      const [kh, kw, cin, multiplier] = shapes[0];
      const cout = shapes[1][3] as number;
      const depthwise = convolution(x, constant(`${name}_depthwise`, [cin * multiplier, 1, kh, kw], depthwiseKernel(weights[0], kh, kw, cin, multiplier)), undefined, [kh, kw], cin);
      const pointwise = constant(`${name}_pointwise`, [cout, cin * multiplier, 1, 1], transposeKernel(weights[1], 1, 1, cin * multiplier, cout));
      const bias = biasOf(c.use_bias, 2, cout);
      const mixed = node('Conv', bias ? [depthwise.name, pointwise, bias] : [depthwise.name, pointwise], { kernel_shape: [1, 1], strides: [1, 1], pads: [0, 0, 0, 0] });
      out = activate({ ...depthwise, name: mixed }, c.activation);
    } else if (className === 'Dense') {
      const x = single();
      if (x.rank !== 2) refuse(`a Dense layer on a rank-${x.rank} tensor (flatten or pool first)`);
      const [units_in, units] = shapes[0];
      const product = node('MatMul', [x.name, constant(`${name}_kernel`, [units_in, units], weights[0])]);
      const biased = c.use_bias === false ? product : node('Add', [product, constant(`${name}_bias`, [units], weights[1])]);
      out = activate({ name: biased, rank: 2, nchw: false }, c.activation);
    } else if (className === 'BatchNormalization') {
      const x = single();
      const axis = Number(c.axis ?? -1);
      if (!(axis === -1 || axis === x.rank - 1)) refuse(`normalises axis ${axis}, not the channels (the last axis)`);
      if (x.rank !== 2 && !x.nchw) refuse(`a rank-${x.rank} input`);
      let at = 0;
      const channels = shapes[shapes.length - 1][0];
      const gamma = c.scale === false ? new Float32Array(channels).fill(1) : weights[at++];
      const beta = c.center === false ? new Float32Array(channels) : weights[at++];
      const [mean, variance] = [weights[at], weights[at + 1]];
      const params = [gamma, beta, mean, variance].map((data, i) => constant(`${name}_${['gamma', 'beta', 'mean', 'var'][i]}`, [channels], data));
      out = { ...x, name: node('BatchNormalization', [x.name, ...params], { epsilon: { f: Number(c.epsilon ?? 1e-3) } }) };
    } else if (className === 'ReLU') {
      const x = single();
      if (Number(c.negative_slope ?? 0) !== 0 || Number(c.threshold ?? 0) !== 0) refuse('a leaky or thresholded ReLU');
      const max = c.max_value;
      out = { ...x, name: max === null || max === undefined ? node('Relu', [x.name]) : node('Clip', [x.name, zero, constant('max', [], Float32Array.of(Number(max)))]) };
    } else if (className === 'Activation') {
      out = activate(single(), c.activation);
    } else if (className in MERGES) {
      if (inbound.length < 2) refuse('a merge of fewer than two inputs');
      if (inbound.some((v) => v.rank !== inbound[0].rank || v.nchw !== inbound[0].nchw)) refuse('inputs of different ranks');
      const op = MERGES[className];
      let merged = node(op, inbound.map((v) => v.name));
      if (className === 'Average') merged = node('Div', [merged, constant('count', [], Float32Array.of(inbound.length))]);
      out = { ...inbound[0], name: merged };
    } else if (className === 'Concatenate') {
      if (inbound.some((v) => v.rank !== inbound[0].rank || v.nchw !== inbound[0].nchw)) refuse('inputs of different ranks');
      const rank = inbound[0].rank;
      let axis = Number(c.axis ?? -1);
      if (axis < 0) axis += rank;
      // NHWC axis → NCHW axis: channels (3) → 1, height (1) → 2, width (2) → 3.
      if (inbound[0].nchw) axis = [0, 2, 3, 1][axis] ?? axis;
      out = { ...inbound[0], name: node('Concat', inbound.map((v) => v.name), { axis }) };
    } else if (className === 'ZeroPadding2D') {
      const x = spatial();
      const p = c.padding;
      const [[top, bottom], [left, right]] = typeof p === 'number' ? [[p, p], [p, p]] : Array.isArray(p) && typeof p[0] === 'number' ? [[p[0], p[0]], [p[1], p[1]]] : (p as number[][]);
      const pads = constant('pads', [8], BigInt64Array.from([0, 0, top, left, 0, 0, bottom, right].map((v) => BigInt(v))));
      out = { ...x, name: node('Pad', [x.name, pads]), h: x.h! + top + bottom, w: x.w! + left + right };
    } else if (className === 'MaxPooling2D' || className === 'AveragePooling2D') {
      const x = spatial();
      const kernel = pair(c.pool_size ?? 2, 'pool_size');
      const strides = pair(c.strides ?? kernel, 'strides');
      const { pads, h, w } = windowed(x, kernel, strides, [1, 1]);
      // count_include_pad stays 0: TF averages over the real pixels only.
      out = { ...x, name: node(className === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [x.name], { kernel_shape: kernel, strides, pads }), h, w };
    } else if (className === 'GlobalAveragePooling2D' || className === 'GlobalMaxPooling2D') {
      const x = spatial();
      if (c.keepdims === true) refuse('keepdims');
      const pooled = node(className === 'GlobalAveragePooling2D' ? 'GlobalAveragePool' : 'GlobalMaxPool', [x.name]);
      out = { name: node('Flatten', [pooled], { axis: 1 }), rank: 2, nchw: false };
    } else if (className === 'Flatten') {
      const x = single();
      const nhwc = x.nchw ? node('Transpose', [x.name], { perm: [0, 2, 3, 1] }) : x.name;
      out = { name: x.rank === 2 ? nhwc : node('Flatten', [nhwc], { axis: 1 }), rank: 2, nchw: false };
    } else {
      out = refuse('not supported');
    }
    values.set(name, out);
    previous = out;
  }

  const outputLayer = sequential ? undefined : (json.config.output_layers?.[0]?.[0] as string | undefined);
  let result = outputLayer ? values.get(outputLayer) : previous;
  if (!result) throw new UnsupportedModelError(`${model.name}: the output layer "${outputLayer}" was not found among the converted layers`);
  if (result.nchw) result = { name: node('Transpose', [result.name], { perm: [0, 2, 3, 1] }), rank: 4, nchw: false };
  nodes.push({ op: 'Identity', inputs: [result.name], outputs: ['output'] });
  return writeOnnxModel({
    name: model.name,
    inputs: [{ name: 'input', shape: ['batch', ...inputShape] }],
    outputs: [{ name: 'output', shape: ['batch', ...outputShape.slice(1).map((d) => d ?? `d${counter++}`)] }],
    nodes,
    initializers,
  });
}

/** The values feeding a functional model's layer, by its inbound node (a layer used twice is refused). */
function inboundValues(config: LayerConfig, values: ReadonlyMap<string, Value>, refuse: (why: string) => never): Value[] {
  const nodes = config.inbound_nodes ?? [];
  if (nodes.length !== 1) refuse(nodes.length === 0 ? 'no inputs' : `shared by ${nodes.length} calls (a layer used twice)`);
  return (nodes[0] as unknown[][]).map((entry) => {
    const [source, nodeIndex, tensorIndex] = entry as [string, number, number];
    if (nodeIndex !== 0 || tensorIndex !== 0) refuse(`reads output ${tensorIndex} of call ${nodeIndex} of "${source}"`);
    const value = values.get(source);
    if (!value) return refuse(`its input "${source}" comes later in the model's layer order`);
    return value;
  });
}

/** TF's convolution kernel [kh, kw, cin, cout] as ONNX's [cout, cin, kh, kw]. */
function transposeKernel(w: Float32Array, kh: number, kw: number, cin: number, cout: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) for (let ci = 0; ci < cin; ci++) for (let co = 0; co < cout; co++) {
    out[((co * cin + ci) * kh + i) * kw + j] = w[((i * kw + j) * cin + ci) * cout + co];
  }
  return out;
}

/** TF's depthwise kernel [kh, kw, cin, multiplier] as ONNX's grouped [cin × multiplier, 1, kh, kw] (output channel c·multiplier + m, as TF orders them). */
function depthwiseKernel(w: Float32Array, kh: number, kw: number, cin: number, multiplier: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) for (let ci = 0; ci < cin; ci++) for (let m = 0; m < multiplier; m++) {
    out[((ci * multiplier + m) * kh + i) * kw + j] = w[((i * kw + j) * cin + ci) * multiplier + m];
  }
  return out;
}
