/**
 * A small TF.js graph model written by hand the way tfjs-converter writes a converted SavedModel:
 * `<name>.json` (format graph-model, modelTopology.node, weightsManifest) and `<name>.bin`, with the
 * ops a converted CNN holds: preprocessing (Sub of a per-channel mean, Mul by a scalar), Conv2D +
 * BiasAdd + Relu, FusedDepthwiseConv2dNative (BiasAdd, Relu6), FusedBatchNormV3, _FusedConv2D
 * (BiasAdd, Relu), a folded batch norm (Mul, AddV2 by per-channel constants), Mean over int32 axes,
 * _FusedMatMul (BiasAdd, Relu), MatMul with transpose_b + Add, Softmax. 8×8×3 images, 4 classes.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { seededRandom } from '../../src/models/random.js';

export const GRAPH_SHAPE = [8, 8, 3] as const;
export const GRAPH_CLASSES = 4;

type Quantization = 'uint8' | 'float16';

interface ConstSpec {
  name: string;
  shape: number[];
  dtype?: 'float32' | 'int32';
  /** Values; default seeded uniform in ±scale. */
  values?: number[];
  scale?: number;
  quantize?: Quantization;
}

/** What the test expects of each constant: its kind and fan-in (or value) after re-initialisation. */
export const EXPECTED_ROLES: Readonly<Record<string, { kind: 'weight' | 'bias'; fanIn: number } | { kind: 'constant'; value: number } | { kind: 'keep' }>> = {
  pre_mean: { kind: 'keep' },
  pre_scale: { kind: 'keep' },
  'conv1/kernel': { kind: 'weight', fanIn: 27 },
  'conv1/bias': { kind: 'bias', fanIn: 27 },
  'dw/kernel': { kind: 'weight', fanIn: 9 },
  'dw/bias': { kind: 'bias', fanIn: 9 },
  'bn/scale': { kind: 'constant', value: 1 },
  'bn/offset': { kind: 'constant', value: 0 },
  'bn/mean': { kind: 'constant', value: 0 },
  'bn/variance': { kind: 'constant', value: 1 },
  'pw/kernel': { kind: 'weight', fanIn: 4 },
  'pw/bias': { kind: 'bias', fanIn: 4 },
  'fold/scale': { kind: 'constant', value: 1 },
  'fold/offset': { kind: 'constant', value: 0 },
  'fc1/kernel': { kind: 'weight', fanIn: 6 },
  'fc1/bias': { kind: 'bias', fanIn: 6 },
  'fc2/kernel': { kind: 'weight', fanIn: 5 },
  'fc2/bias': { kind: 'bias', fanIn: 5 },
};

const CONSTS: ConstSpec[] = [
  { name: 'pre_mean', shape: [3], values: [0.5, 0.45, 0.4] },
  { name: 'pre_scale', shape: [], values: [2] },
  { name: 'conv1/kernel', shape: [3, 3, 3, 4], scale: 0.5, quantize: 'uint8' },
  { name: 'conv1/bias', shape: [4], scale: 0.2 },
  { name: 'dw/kernel', shape: [3, 3, 4, 1], scale: 0.6, quantize: 'float16' },
  { name: 'dw/bias', shape: [4], scale: 0.2 },
  { name: 'bn/scale', shape: [4], values: [1.3, 0.8, 1.1, 0.9] },
  { name: 'bn/offset', shape: [4], values: [0.1, -0.2, 0.05, 0.3] },
  { name: 'bn/mean', shape: [4], values: [0.4, 0.2, 0.3, 0.1] },
  { name: 'bn/variance', shape: [4], values: [0.5, 1.5, 0.8, 2] },
  { name: 'pw/kernel', shape: [1, 1, 4, 6], scale: 0.9 },
  { name: 'pw/bias', shape: [6], scale: 0.2 },
  { name: 'fold/scale', shape: [6], values: [1.2, 0.7, 1.5, 0.9, 1.1, 0.6] },
  { name: 'fold/offset', shape: [6], values: [0.05, -0.1, 0.2, 0, 0.1, -0.05] },
  { name: 'axes', shape: [2], dtype: 'int32', values: [1, 2] },
  { name: 'fc1/kernel', shape: [6, 5], scale: 1.2 },
  { name: 'fc1/bias', shape: [5], scale: 0.3 },
  // Large: the victim answers confidently (near one-hot), as trained classifiers do.
  { name: 'fc2/kernel', shape: [4, 5], scale: 6 },
  { name: 'fc2/bias', shape: [4], scale: 0.5 },
];

const b64 = (text: string): string => Buffer.from(text, 'latin1').toString('base64');
const ints = (values: number[]) => ({ list: { i: values.map(String) } });
const float = { T: { type: 'DT_FLOAT' } };
const conv = { strides: ints([1, 1, 1, 1]), padding: { s: b64('SAME') }, data_format: { s: b64('NHWC') }, dilations: ints([1, 1, 1, 1]) };
const fused = (...ops: string[]) => ({ fused_ops: { list: { s: ops.map(b64) } }, num_args: { i: '1' }, epsilon: { f: 0 } });
const dims = (shape: number[]) => ({ dim: shape.map((d) => ({ size: String(d) })) });

function constNode(spec: ConstSpec): object {
  const type = spec.dtype === 'int32' ? 'DT_INT32' : 'DT_FLOAT';
  return { name: spec.name, op: 'Const', attr: { dtype: { type }, value: { tensor: { dtype: type, tensorShape: dims(spec.shape) } } } };
}

const NODES = [
  { name: 'x', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: dims([-1, ...GRAPH_SHAPE]) } } },
  ...CONSTS.map(constNode),
  { name: 'centred', op: 'Sub', input: ['x', 'pre_mean'], attr: float },
  { name: 'scaled_input', op: 'Mul', input: ['centred', 'pre_scale'], attr: float },
  { name: 'conv1', op: 'Conv2D', input: ['scaled_input', 'conv1/kernel'], attr: { ...float, ...conv } },
  { name: 'conv1_bias', op: 'BiasAdd', input: ['conv1', 'conv1/bias'], attr: { ...float, data_format: { s: b64('NHWC') } } },
  { name: 'relu1', op: 'Relu', input: ['conv1_bias'], attr: float },
  { name: 'dw', op: 'FusedDepthwiseConv2dNative', input: ['relu1', 'dw/kernel', 'dw/bias'], attr: { ...float, ...conv, ...fused('BiasAdd', 'Relu6') } },
  {
    name: 'bn',
    op: 'FusedBatchNormV3',
    input: ['dw', 'bn/scale', 'bn/offset', 'bn/mean', 'bn/variance'],
    attr: { ...float, U: { type: 'DT_FLOAT' }, epsilon: { f: 0.001 }, data_format: { s: b64('NHWC') }, is_training: { b: false } },
  },
  { name: 'pw', op: '_FusedConv2D', input: ['bn', 'pw/kernel', 'pw/bias'], attr: { ...float, ...conv, ...fused('BiasAdd', 'Relu') } },
  { name: 'folded_scale', op: 'Mul', input: ['pw', 'fold/scale'], attr: float },
  { name: 'folded_offset', op: 'AddV2', input: ['folded_scale', 'fold/offset'], attr: float },
  { name: 'pool', op: 'Mean', input: ['folded_offset', 'axes'], attr: { ...float, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } } },
  {
    name: 'fc1',
    op: '_FusedMatMul',
    input: ['pool', 'fc1/kernel', 'fc1/bias'],
    attr: { ...float, ...fused('BiasAdd', 'Relu'), transpose_a: { b: false }, transpose_b: { b: false } },
  },
  { name: 'fc2', op: 'MatMul', input: ['fc1', 'fc2/kernel'], attr: { ...float, transpose_a: { b: false }, transpose_b: { b: true } } },
  { name: 'logits', op: 'Add', input: ['fc2', 'fc2/bias'], attr: float },
  { name: 'probs', op: 'Softmax', input: ['logits'], attr: float },
];

/** IEEE half precision of a float (round to nearest, no subnormal care needed for these values). */
function toHalf(value: number): number {
  const f = new Float32Array([value]);
  const bits = new Uint32Array(f.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15;
  const mantissa = bits & 0x7fffff;
  if (exponent <= 0) return sign;
  if (exponent >= 31) return sign | 0x7c00;
  return sign | (exponent << 10) | Math.round(mantissa / 0x2000);
}

export interface WrittenGraphModel {
  /** The model's JSON file. */
  readonly json: string;
  /** The stored float values of each constant (after quantization, as tfjs decodes them approximately). */
  readonly values: ReadonlyMap<string, Float32Array>;
}

/** Writes `<name>.json` and `<name>.bin` into `dir`; `seed` draws the "trained" weights. */
export async function writeGraphModel(dir: string, name = 'mobile', seed = 3): Promise<WrittenGraphModel> {
  const random = seededRandom(seed);
  const parts: Uint8Array[] = [];
  const weights: object[] = [];
  const values = new Map<string, Float32Array>();
  for (const spec of CONSTS) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const data = spec.values ?? Array.from({ length: size }, () => (random() * 2 - 1) * (spec.scale ?? 1));
    if (spec.dtype === 'int32') {
      parts.push(new Uint8Array(Int32Array.from(data).buffer));
      weights.push({ name: spec.name, shape: spec.shape, dtype: 'int32' });
      continue;
    }
    values.set(spec.name, Float32Array.from(data));
    if (spec.quantize === 'uint8') {
      const min = Math.min(...data);
      const scale = (Math.max(...data) - min) / 255;
      parts.push(Uint8Array.from(data.map((v) => Math.round((v - min) / scale))));
      weights.push({ name: spec.name, shape: spec.shape, dtype: 'float32', quantization: { dtype: 'uint8', min, scale } });
    } else if (spec.quantize === 'float16') {
      parts.push(new Uint8Array(Uint16Array.from(data.map(toHalf)).buffer));
      weights.push({ name: spec.name, shape: spec.shape, dtype: 'float32', quantization: { dtype: 'float16' } });
    } else {
      parts.push(new Uint8Array(Float32Array.from(data).buffer));
      weights.push({ name: spec.name, shape: spec.shape, dtype: 'float32' });
    }
  }
  const modelJson = {
    format: 'graph-model',
    generatedBy: '2.15.0',
    convertedBy: 'TensorFlow.js Converter v4.22.0 (by hand, for the tests)',
    modelTopology: { node: NODES, library: {}, versions: { producer: 1645 } },
    weightsManifest: [{ paths: [`${name}.bin`], weights }],
  };
  const json = join(dir, `${name}.json`);
  await writeFile(json, JSON.stringify(modelJson));
  await writeFile(join(dir, `${name}.bin`), Buffer.concat(parts));
  return { json, values };
}
