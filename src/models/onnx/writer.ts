/**
 * Writes small ONNX models (ModelProto) from a plain description: nodes, float32/int64 initializers,
 * one or more inputs and outputs. For tests and benchmarks that need an ONNX file where no exporter
 * is at hand; it checks nothing beyond the encoding (onnxruntime validates the graph when loading).
 */
import { ONNX_ATTR, ONNX_FIELDS as F, ONNX_FLOAT, ONNX_INT64, ProtoWriter } from './proto.js';

/** An attribute: an integer, `{ f }` for a float, a list of integers, `{ floats }`, or a string. */
export type OnnxAttribute = number | string | readonly number[] | { readonly f: number } | { readonly floats: readonly number[] };

export interface OnnxNodeSpec {
  readonly op: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly name?: string;
  readonly attributes?: Readonly<Record<string, OnnxAttribute>>;
}

export interface OnnxTensorSpec {
  readonly name: string;
  readonly dims: readonly number[];
  /** float32 values, or int64 values (BigInt64Array) for shapes and indices. */
  readonly data: Float32Array | BigInt64Array;
}

export interface OnnxValueSpec {
  readonly name: string;
  /** Dimensions; a string names a symbolic one (e.g. 'batch'). */
  readonly shape: readonly (number | string)[];
}

export interface OnnxModelSpec {
  readonly inputs: readonly OnnxValueSpec[];
  readonly outputs: readonly OnnxValueSpec[];
  readonly nodes: readonly OnnxNodeSpec[];
  readonly initializers?: readonly OnnxTensorSpec[];
  /** Default opset 13. */
  readonly opset?: number;
  readonly name?: string;
}

/** The ModelProto bytes for `spec` (IR version 8). */
export function writeOnnxModel(spec: OnnxModelSpec): Uint8Array {
  const w = new ProtoWriter();
  w.int(F.model.irVersion, 8);
  w.string(F.model.producerName, 'model-stealing-defense');
  w.message(F.model.graph, (g) => writeGraph(g, spec));
  w.message(F.model.opsetImport, (o) => o.string(F.opset.domain, '').int(F.opset.version, spec.opset ?? 13));
  return w.finish();
}

function writeGraph(g: ProtoWriter, spec: OnnxModelSpec): void {
  spec.nodes.forEach((node, i) => g.message(F.graph.node, (n) => writeNode(n, node, i)));
  g.string(F.graph.name, spec.name ?? 'graph');
  for (const tensor of spec.initializers ?? []) g.message(F.graph.initializer, (t) => writeTensor(t, tensor));
  for (const input of spec.inputs) g.message(F.graph.input, (v) => writeValueInfo(v, input));
  for (const output of spec.outputs) g.message(F.graph.output, (v) => writeValueInfo(v, output));
}

function writeNode(n: ProtoWriter, node: OnnxNodeSpec, index: number): void {
  for (const input of node.inputs) n.string(F.node.input, input);
  for (const output of node.outputs) n.string(F.node.output, output);
  n.string(F.node.name, node.name ?? `${node.op}_${index}`);
  n.string(F.node.opType, node.op);
  for (const [name, value] of Object.entries(node.attributes ?? {})) n.message(F.node.attribute, (a) => writeAttribute(a, name, value));
}

function writeAttribute(a: ProtoWriter, name: string, value: OnnxAttribute): void {
  a.string(F.attribute.name, name);
  if (typeof value === 'number') a.int(F.attribute.i, value).int(F.attribute.type, ONNX_ATTR.INT);
  else if (typeof value === 'string') a.string(F.attribute.s, value).int(F.attribute.type, ONNX_ATTR.STRING);
  else if (Array.isArray(value)) a.packedInts(F.attribute.ints, value).int(F.attribute.type, ONNX_ATTR.INTS);
  else if ('f' in value) a.float(F.attribute.f, value.f).int(F.attribute.type, ONNX_ATTR.FLOAT);
  else if ('floats' in value) a.packedFloats(F.attribute.floats, value.floats).int(F.attribute.type, ONNX_ATTR.FLOATS);
}

/** A TensorProto holding `tensor` as raw little-endian bytes. */
export function writeTensor(t: ProtoWriter, tensor: OnnxTensorSpec): void {
  t.packedInts(F.tensor.dims, tensor.dims);
  t.int(F.tensor.dataType, tensor.data instanceof BigInt64Array ? ONNX_INT64 : ONNX_FLOAT);
  t.string(F.tensor.name, tensor.name);
  const bytes = new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  // Raw data is little-endian; so is every platform Node runs on.
  t.bytes(F.tensor.rawData, bytes);
}

function writeValueInfo(v: ProtoWriter, value: OnnxValueSpec): void {
  v.string(F.valueInfo.name, value.name);
  v.message(F.valueInfo.type, (type) =>
    type.message(F.type.tensorType, (tt) => {
      tt.int(F.tensorType.elemType, ONNX_FLOAT);
      tt.message(F.tensorType.shape, (shape) => {
        for (const dim of value.shape) shape.message(F.shape.dim, (d) => (typeof dim === 'number' ? d.int(F.dim.value, dim) : d.string(F.dim.param, dim)));
      });
    }),
  );
}
