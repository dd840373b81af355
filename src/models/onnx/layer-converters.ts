/**
 * One converter per TF.js layer class, for layers-to-onnx.ts: each writes its layer's ONNX nodes
 * and initializers (the weights, in ONNX's layout) into the graph under construction and returns
 * the value it produces. Activations have their own table. A converter refuses (through `refuse`,
 * which names the layer) whatever it cannot write exactly; nothing is approximated.
 *
 * TF.js is NHWC; ONNX's convolutions are NCHW. 4-D values are held NCHW (with their height and
 * width, for the pads of window ops); TF's 'same' padding puts the odd pixel at the end, so the pads
 * are written out from the static image size (onnxruntime refuses auto_pad with dilations).
 */
import type { OnnxGraphBuilder } from './graph-builder.js';

/** The layer classes converted (inference-time identities included). */
export const ONNX_CONVERTIBLE_LAYERS = [
  'InputLayer',
  'Conv2D',
  'DepthwiseConv2D',
  'SeparableConv2D',
  'Dense',
  'BatchNormalization',
  'ReLU',
  'Activation',
  'Add',
  'Multiply',
  'Average',
  'Maximum',
  'Minimum',
  'Concatenate',
  'ZeroPadding2D',
  'MaxPooling2D',
  'AveragePooling2D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'Flatten',
  'Dropout',
  'SpatialDropout1D',
  'GaussianNoise',
  'GaussianDropout',
  'AlphaDropout',
] as const;

/** The classes with a converter: all but InputLayer, which is the graph's input itself. */
export type ConvertedLayerClass = Exclude<(typeof ONNX_CONVERTIBLE_LAYERS)[number], 'InputLayer'>;

/** A value in the graph: its name, rank, and whether a 4-D value is held NCHW (TF's NHWC transposed), with its height and width then. */
export interface Value {
  name: string;
  rank: number;
  nchw: boolean;
  h?: number;
  w?: number;
}

/** What a converter gets: one layer of the model, its inputs, and the graph to write into. */
export interface LayerInput {
  /** The layer's name (weights are named after it). */
  readonly name: string;
  /** The layer's Keras config (snake_case keys). */
  readonly config: Readonly<Record<string, unknown>>;
  /** The values feeding the layer. */
  readonly inbound: readonly Value[];
  /** The layer's weights, in TF's layout and order, and their shapes. */
  readonly weights: readonly Float32Array[];
  readonly shapes: readonly number[][];
  readonly graph: OnnxGraphBuilder;
  /** The graph's scalar 0 (for Clip). */
  readonly zero: string;
  /** Throws UnsupportedModelError naming this layer and `why`. */
  refuse(why: string): never;
}

/** Writes one layer; returns the value it produces. */
export type LayerConverter = (layer: LayerInput) => Value;

/** Per Keras activation name: writes it on `x`, returns the output's name. */
type ActivationConverter = (x: Value, graph: OnnxGraphBuilder, zero: string) => string;

const sigmoidTimesInput: ActivationConverter = (x, g) => g.node('Mul', [x.name, g.node('Sigmoid', [x.name])]);
const hardSigmoid: ActivationConverter = (x, g) => g.node('HardSigmoid', [x.name], { alpha: { f: 0.2 }, beta: { f: 0.5 } });

const ACTIVATIONS: Readonly<Record<string, ActivationConverter>> = {
  linear: (x) => x.name,
  relu: (x, g) => g.node('Relu', [x.name]),
  relu6: (x, g, zero) => g.node('Clip', [x.name, zero, g.constant('six', [], Float32Array.of(6))]),
  sigmoid: (x, g) => g.node('Sigmoid', [x.name]),
  tanh: (x, g) => g.node('Tanh', [x.name]),
  elu: (x, g) => g.node('Elu', [x.name], { alpha: { f: 1 } }),
  selu: (x, g) => g.node('Selu', [x.name]),
  softplus: (x, g) => g.node('Softplus', [x.name]),
  softsign: (x, g) => g.node('Softsign', [x.name]),
  hardSigmoid,
  hard_sigmoid: hardSigmoid,
  swish: sigmoidTimesInput,
  silu: sigmoidTimesInput,
  // TF's softmax runs over the last axis: the channels, at axis 1 of an NCHW value.
  softmax: (x, g) => g.node('Softmax', [x.name], { axis: x.nchw ? 1 : -1 }),
};

/** `x` with the layer's activation (config `activation`, default linear) applied. */
function activate(layer: LayerInput, x: Value, activation: unknown): Value {
  const key = (activation as string | undefined) ?? 'linear';
  if (!Object.hasOwn(ACTIVATIONS, key)) return layer.refuse(`activation ${String(activation)}`);
  return { ...x, name: ACTIVATIONS[key](x, layer.graph, layer.zero) };
}

/** The layer's one input. */
function single(layer: LayerInput): Value {
  if (layer.inbound.length !== 1) layer.refuse(`takes one input, got ${layer.inbound.length}`);
  return layer.inbound[0];
}

/** The layer's one input, which must be an image (4-D, held NCHW). */
function spatial(layer: LayerInput): Value {
  const x = single(layer);
  if (!x.nchw) layer.refuse(`needs a 4-D image tensor, got rank ${x.rank}`);
  return x;
}

/** A config value given as one number or a pair, as a pair. */
function pair(layer: LayerInput, v: unknown, what: string): number[] {
  const p = typeof v === 'number' ? [v, v] : Array.isArray(v) && v.length === 2 ? (v as number[]) : layer.refuse(`${what} ${JSON.stringify(v)}`);
  return p.map(Number);
}

/** Explicit pads and the output size of a window op on `x` (TF's 'same': the odd pixel at the end). */
function windowed(layer: LayerInput, x: Value, kernel: number[], strides: number[], dilations: number[]): { pads: number[]; h: number; w: number } {
  const padding = layer.config.padding;
  if (padding !== 'same' && padding !== 'valid') layer.refuse(`padding ${String(padding)}`);
  const sizes = [x.h!, x.w!];
  const begin: number[] = [];
  const end: number[] = [];
  const out = sizes.map((size, i) => {
    const span = (kernel[i] - 1) * dilations[i] + 1;
    if (padding === 'valid') {
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
  if (out.some((d) => d < 1)) layer.refuse(`its window does not fit the ${x.h}×${x.w} input`);
  return { pads: [...begin, ...end], h: out[0], w: out[1] };
}

/** A Conv node with the layer's strides, dilations and padding. */
function convolution(layer: LayerInput, x: Value, kernel: string, bias: string | undefined, kernelSize: number[], group: number): Value {
  const strides = pair(layer, layer.config.strides ?? 1, 'strides');
  const dilations = pair(layer, layer.config.dilation_rate ?? 1, 'dilation_rate');
  const { pads, h, w } = windowed(layer, x, kernelSize, strides, dilations);
  const out = layer.graph.node('Conv', bias ? [x.name, kernel, bias] : [x.name, kernel], { kernel_shape: kernelSize, strides, dilations, group, pads });
  return { name: out, rank: 4, nchw: true, h, w };
}

/** The bias initializer (weights[at]), or undefined when the layer has none. */
function biasOf(layer: LayerInput, useBias: unknown, at: number, channels: number): string | undefined {
  return useBias === false ? undefined : layer.graph.constant(`${layer.name}_bias`, [channels], layer.weights[at]);
}

const conv2d: LayerConverter = (layer) => {
  const { name, config: c, weights, shapes, graph } = layer;
  const x = spatial(layer);
  const [kh, kw, cin, cout] = shapes[0];
  const kernel = graph.constant(`${name}_kernel`, [cout, cin, kh, kw], transposeKernel(weights[0], kh, kw, cin, cout));
  return activate(layer, convolution(layer, x, kernel, biasOf(layer, c.use_bias, 1, cout), [kh, kw], 1), c.activation);
};

const depthwiseConv2d: LayerConverter = (layer) => {
  const { name, config: c, weights, shapes, graph } = layer;
  const x = spatial(layer);
  const [kh, kw, cin, multiplier] = shapes[0];
  const kernel = graph.constant(`${name}_kernel`, [cin * multiplier, 1, kh, kw], depthwiseKernel(weights[0], kh, kw, cin, multiplier));
  return activate(layer, convolution(layer, x, kernel, biasOf(layer, c.use_bias, 1, cin * multiplier), [kh, kw], cin), c.activation);
};

const separableConv2d: LayerConverter = (layer) => {
  const { name, config: c, weights, shapes, graph } = layer;
  const x = spatial(layer);
  const [kh, kw, cin, multiplier] = shapes[0];
  const cout = shapes[1][3];
  const depthwise = convolution(
    layer,
    x,
    graph.constant(`${name}_depthwise`, [cin * multiplier, 1, kh, kw], depthwiseKernel(weights[0], kh, kw, cin, multiplier)),
    undefined,
    [kh, kw],
    cin,
  );
  const pointwise = graph.constant(`${name}_pointwise`, [cout, cin * multiplier, 1, 1], transposeKernel(weights[1], 1, 1, cin * multiplier, cout));
  const bias = biasOf(layer, c.use_bias, 2, cout);
  const mixed = graph.node('Conv', bias ? [depthwise.name, pointwise, bias] : [depthwise.name, pointwise], {
    kernel_shape: [1, 1],
    strides: [1, 1],
    pads: [0, 0, 0, 0],
  });
  return activate(layer, { ...depthwise, name: mixed }, c.activation);
};

const dense: LayerConverter = (layer) => {
  const { name, config: c, weights, shapes, graph } = layer;
  const x = single(layer);
  if (x.rank !== 2) layer.refuse(`a Dense layer on a rank-${x.rank} tensor (flatten or pool first)`);
  const [unitsIn, units] = shapes[0];
  const product = graph.node('MatMul', [x.name, graph.constant(`${name}_kernel`, [unitsIn, units], weights[0])]);
  const biased = c.use_bias === false ? product : graph.node('Add', [product, graph.constant(`${name}_bias`, [units], weights[1])]);
  return activate(layer, { name: biased, rank: 2, nchw: false }, c.activation);
};

const batchNormalization: LayerConverter = (layer) => {
  const { name, config: c, weights, shapes, graph } = layer;
  const x = single(layer);
  const axis = Number(c.axis ?? -1);
  if (!(axis === -1 || axis === x.rank - 1)) layer.refuse(`normalises axis ${axis}, not the channels (the last axis)`);
  if (x.rank !== 2 && !x.nchw) layer.refuse(`a rank-${x.rank} input`);
  let at = 0;
  const channels = shapes[shapes.length - 1][0];
  const gamma = c.scale === false ? new Float32Array(channels).fill(1) : weights[at++];
  const beta = c.center === false ? new Float32Array(channels) : weights[at++];
  const [mean, variance] = [weights[at], weights[at + 1]];
  const params = [gamma, beta, mean, variance].map((data, i) => graph.constant(`${name}_${['gamma', 'beta', 'mean', 'var'][i]}`, [channels], data));
  return { ...x, name: graph.node('BatchNormalization', [x.name, ...params], { epsilon: { f: Number(c.epsilon ?? 1e-3) } }) };
};

const relu: LayerConverter = (layer) => {
  const { config: c, graph } = layer;
  const x = single(layer);
  if (Number(c.negative_slope ?? 0) !== 0 || Number(c.threshold ?? 0) !== 0) layer.refuse('a leaky or thresholded ReLU');
  const max = c.max_value;
  return {
    ...x,
    name:
      max === null || max === undefined
        ? graph.node('Relu', [x.name])
        : graph.node('Clip', [x.name, layer.zero, graph.constant('max', [], Float32Array.of(Number(max)))]),
  };
};

const activation: LayerConverter = (layer) => activate(layer, single(layer), layer.config.activation);

/** An elementwise merge of two or more inputs by `op`; `average` divides the sum by their count. */
function merge(op: string, average = false): LayerConverter {
  return (layer) => {
    const { inbound, graph } = layer;
    if (inbound.length < 2) layer.refuse('a merge of fewer than two inputs');
    if (inbound.some((v) => v.rank !== inbound[0].rank || v.nchw !== inbound[0].nchw)) layer.refuse('inputs of different ranks');
    let merged = graph.node(
      op,
      inbound.map((v) => v.name),
    );
    if (average) merged = graph.node('Div', [merged, graph.constant('count', [], Float32Array.of(inbound.length))]);
    return { ...inbound[0], name: merged };
  };
}

const concatenate: LayerConverter = (layer) => {
  const { inbound, config: c, graph } = layer;
  if (inbound.some((v) => v.rank !== inbound[0].rank || v.nchw !== inbound[0].nchw)) layer.refuse('inputs of different ranks');
  const rank = inbound[0].rank;
  let axis = Number(c.axis ?? -1);
  if (axis < 0) axis += rank;
  // NHWC axis → NCHW axis: channels (3) → 1, height (1) → 2, width (2) → 3.
  if (inbound[0].nchw) axis = [0, 2, 3, 1][axis] ?? axis;
  return {
    ...inbound[0],
    name: graph.node(
      'Concat',
      inbound.map((v) => v.name),
      { axis },
    ),
  };
};

const zeroPadding2d: LayerConverter = (layer) => {
  const x = spatial(layer);
  const p = layer.config.padding;
  const [[top, bottom], [left, right]] =
    typeof p === 'number'
      ? [
          [p, p],
          [p, p],
        ]
      : Array.isArray(p) && typeof p[0] === 'number'
        ? [
            [p[0], p[0]],
            [p[1], p[1]],
          ]
        : (p as number[][]);
  const pads = layer.graph.constant('pads', [8], BigInt64Array.from([0, 0, top, left, 0, 0, bottom, right].map((v) => BigInt(v))));
  return { ...x, name: layer.graph.node('Pad', [x.name, pads]), h: x.h! + top + bottom, w: x.w! + left + right };
};

/** MaxPool or AveragePool over the layer's window (count_include_pad stays 0: TF averages over the real pixels only). */
function pooling(op: 'MaxPool' | 'AveragePool'): LayerConverter {
  return (layer) => {
    const x = spatial(layer);
    const kernel = pair(layer, layer.config.pool_size ?? 2, 'pool_size');
    const strides = pair(layer, layer.config.strides ?? kernel, 'strides');
    const { pads, h, w } = windowed(layer, x, kernel, strides, [1, 1]);
    return { ...x, name: layer.graph.node(op, [x.name], { kernel_shape: kernel, strides, pads }), h, w };
  };
}

/** GlobalAveragePool or GlobalMaxPool, flattened to [batch, channels]. */
function globalPooling(op: 'GlobalAveragePool' | 'GlobalMaxPool'): LayerConverter {
  return (layer) => {
    const x = spatial(layer);
    if (layer.config.keepdims === true) layer.refuse('keepdims');
    const pooled = layer.graph.node(op, [x.name]);
    return { name: layer.graph.node('Flatten', [pooled], { axis: 1 }), rank: 2, nchw: false };
  };
}

/** Back to NHWC first: a flattened image's element order is TF's. */
const flatten: LayerConverter = (layer) => {
  const { graph } = layer;
  const x = single(layer);
  const nhwc = x.nchw ? graph.node('Transpose', [x.name], { perm: [0, 2, 3, 1] }) : x.name;
  return { name: x.rank === 2 ? nhwc : graph.node('Flatten', [nhwc], { axis: 1 }), rank: 2, nchw: false };
};

/** Dropout and noise layers: identities at inference. */
const identity: LayerConverter = (layer) => single(layer);

/** The converter of each layer class but InputLayer (the type makes the table cover ONNX_CONVERTIBLE_LAYERS exactly). */
export const LAYER_CONVERTERS: Readonly<Record<ConvertedLayerClass, LayerConverter>> = {
  Conv2D: conv2d,
  DepthwiseConv2D: depthwiseConv2d,
  SeparableConv2D: separableConv2d,
  Dense: dense,
  BatchNormalization: batchNormalization,
  ReLU: relu,
  Activation: activation,
  Add: merge('Add'),
  Multiply: merge('Mul'),
  Average: merge('Sum', true),
  Maximum: merge('Max'),
  Minimum: merge('Min'),
  Concatenate: concatenate,
  ZeroPadding2D: zeroPadding2d,
  MaxPooling2D: pooling('MaxPool'),
  AveragePooling2D: pooling('AveragePool'),
  GlobalAveragePooling2D: globalPooling('GlobalAveragePool'),
  GlobalMaxPooling2D: globalPooling('GlobalMaxPool'),
  Flatten: flatten,
  Dropout: identity,
  SpatialDropout1D: identity,
  GaussianNoise: identity,
  GaussianDropout: identity,
  AlphaDropout: identity,
};

/** TF's convolution kernel [kh, kw, cin, cout] as ONNX's [cout, cin, kh, kw]. */
function transposeKernel(w: Float32Array, kh: number, kw: number, cin: number, cout: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let i = 0; i < kh; i++)
    for (let j = 0; j < kw; j++)
      for (let ci = 0; ci < cin; ci++)
        for (let co = 0; co < cout; co++) {
          out[((co * cin + ci) * kh + i) * kw + j] = w[((i * kw + j) * cin + ci) * cout + co];
        }
  return out;
}

/** TF's depthwise kernel [kh, kw, cin, multiplier] as ONNX's grouped [cin × multiplier, 1, kh, kw] (output channel c·multiplier + m, as TF orders them). */
function depthwiseKernel(w: Float32Array, kh: number, kw: number, cin: number, multiplier: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let i = 0; i < kh; i++)
    for (let j = 0; j < kw; j++)
      for (let ci = 0; ci < cin; ci++)
        for (let m = 0; m < multiplier; m++) {
          out[((ci * multiplier + m) * kh + i) * kw + j] = w[((i * kw + j) * cin + ci) * multiplier + m];
        }
  return out;
}
