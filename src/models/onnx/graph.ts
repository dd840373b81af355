/**
 * What the surrogate needs to know about an ONNX model without running it (its inputs' shapes, its
 * initializers and which node uses each), and the seeded re-initialisation: fresh values for every
 * float initializer, fan-in scaled, keeping every other byte of the file.
 */
import { ModelFileError } from '../errors.js';
import { fieldString, ONNX_FIELDS as F, ONNX_FLOAT, ProtoWriter, readFields, repeatedInts, type ProtoField } from './proto.js';
import { writeTensor } from './writer.js';
import { seededFloats } from '../random.js';

export interface OnnxValueInfo {
  readonly name: string;
  /** Fixed dimensions as numbers, symbolic or unknown ones as null. */
  readonly shape: readonly (number | null)[];
}

export interface OnnxInitializer {
  readonly name: string;
  readonly dims: readonly number[];
  readonly dataType: number;
}

export interface OnnxNodeInfo {
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly attributes: ReadonlyMap<string, bigint>;
}

export interface OnnxGraphInfo {
  /** Graph inputs that are not initializers: what a caller feeds. */
  readonly inputs: readonly OnnxValueInfo[];
  readonly outputs: readonly OnnxValueInfo[];
  readonly initializers: readonly OnnxInitializer[];
  readonly nodes: readonly OnnxNodeInfo[];
}

function sub(field: ProtoField): ProtoField[] {
  return readFields(field.payload ?? new Uint8Array(0));
}

function graphField(model: Uint8Array, file: string): ProtoField {
  let fields: ProtoField[];
  try {
    fields = readFields(model);
  } catch (error) {
    throw new ModelFileError(file, `is not an ONNX model (${error instanceof Error ? error.message : String(error)})`);
  }
  const graph = fields.find((f) => f.field === F.model.graph && f.wireType === 2);
  if (!graph) throw new ModelFileError(file, 'is not an ONNX model (no graph)');
  return graph;
}

/** Reads the graph's inputs, outputs, initializers and nodes. Throws ModelFileError naming `file` when it is not an ONNX model. */
export function readOnnxGraph(model: Uint8Array, file = 'model.onnx'): OnnxGraphInfo {
  const graph = graphField(model, file);
  try {
    const fields = sub(graph);
    const initializers = fields.filter((f) => f.field === F.graph.initializer).map((f) => readInitializer(sub(f)));
    const fed = new Set(initializers.map((i) => i.name));
    const inputs = fields.filter((f) => f.field === F.graph.input).map((f) => readValueInfo(sub(f)));
    const outputs = fields.filter((f) => f.field === F.graph.output).map((f) => readValueInfo(sub(f)));
    const nodes = fields.filter((f) => f.field === F.graph.node).map((f) => readNode(sub(f)));
    return { inputs: inputs.filter((i) => !fed.has(i.name)), outputs, initializers, nodes };
  } catch (error) {
    if (error instanceof ModelFileError) throw error;
    throw new ModelFileError(file, `has a malformed graph (${error instanceof Error ? error.message : String(error)})`);
  }
}

function readInitializer(fields: ProtoField[]): OnnxInitializer {
  const name = fields.find((f) => f.field === F.tensor.name);
  const type = fields.find((f) => f.field === F.tensor.dataType);
  return { name: name ? fieldString(name) : '', dims: repeatedInts(fields, F.tensor.dims).map(Number), dataType: Number(type?.varint ?? 0n) };
}

function readValueInfo(fields: ProtoField[]): OnnxValueInfo {
  const name = fields.find((f) => f.field === F.valueInfo.name);
  const shape: (number | null)[] = [];
  const type = fields.find((f) => f.field === F.valueInfo.type);
  const tensorType = type && sub(type).find((f) => f.field === F.type.tensorType);
  const shapeField = tensorType && sub(tensorType).find((f) => f.field === F.tensorType.shape);
  if (shapeField) {
    for (const dim of sub(shapeField).filter((f) => f.field === F.shape.dim)) {
      const value = sub(dim).find((f) => f.field === F.dim.value);
      shape.push(value?.varint !== undefined ? Number(value.varint) : null);
    }
  }
  return { name: name ? fieldString(name) : '', shape };
}

function readNode(fields: ProtoField[]): OnnxNodeInfo {
  const opType = fields.find((f) => f.field === F.node.opType);
  const attributes = new Map<string, bigint>();
  for (const a of fields.filter((f) => f.field === F.node.attribute)) {
    const af = sub(a);
    const name = af.find((f) => f.field === F.attribute.name);
    const i = af.find((f) => f.field === F.attribute.i);
    if (name && i?.varint !== undefined) attributes.set(fieldString(name), i.varint);
  }
  return {
    opType: opType ? fieldString(opType) : '',
    inputs: fields.filter((f) => f.field === F.node.input).map(fieldString),
    attributes,
  };
}

type Role = { kind: 'weight'; fanIn: number } | { kind: 'bias'; fanIn: number } | { kind: 'constant'; value: number };

/** How each float initializer is re-drawn, from the node that uses it. */
function rolesOf(info: OnnxGraphInfo): Map<string, Role> {
  const dims = new Map(info.initializers.map((i) => [i.name, i.dims]));
  const roles = new Map<string, Role>();
  const set = (name: string | undefined, role: Role) => {
    if (name && dims.has(name) && !roles.has(name)) roles.set(name, role);
  };
  for (const node of info.nodes) {
    const [, w, b] = node.inputs;
    const wDims = dims.get(w ?? '');
    switch (node.opType) {
      case 'Conv':
        if (wDims) {
          // W is [out, in/groups, kh, kw]: fan-in is everything but the first axis.
          const fanIn = wDims.slice(1).reduce((a, c) => a * c, 1);
          set(w, { kind: 'weight', fanIn });
          set(b, { kind: 'bias', fanIn });
        }
        break;
      case 'Gemm':
        if (wDims && wDims.length === 2) {
          const fanIn = (node.attributes.get('transB') ?? 0n) !== 0n ? wDims[1] : wDims[0];
          set(w, { kind: 'weight', fanIn });
          set(b, { kind: 'bias', fanIn });
        }
        break;
      case 'MatMul':
        if (wDims && wDims.length >= 2) set(w, { kind: 'weight', fanIn: wDims[wDims.length - 2] });
        break;
      case 'BatchNormalization': {
        const [, scale, bias, mean, variance] = node.inputs;
        set(scale, { kind: 'constant', value: 1 });
        set(bias, { kind: 'constant', value: 0 });
        set(mean, { kind: 'constant', value: 0 });
        set(variance, { kind: 'constant', value: 1 });
        break;
      }
    }
  }
  return roles;
}

/** Fan-in for a float initializer no known node explains (e.g. a bias added after a MatMul): all but the first axis, or its size when 1-D. */
function defaultRole(dims: readonly number[]): Role {
  const fanIn = dims.length > 1 ? dims.slice(1).reduce((a, c) => a * c, 1) : Math.max(1, dims[0] ?? 1);
  return { kind: dims.length > 1 ? 'weight' : 'bias', fanIn };
}

/**
 * The model with every float initializer re-drawn from `seed`: weights of Conv/Gemm/MatMul uniform in
 * ±√(6/fan_in) (He), their biases uniform in ±1/√fan_in, BatchNormalization scale 1, bias 0, mean 0,
 * variance 1; any other float initializer by its shape (see defaultRole). Non-float initializers
 * (shapes, indices) are kept. Same seed, same bytes.
 */
export function reinitOnnx(model: Uint8Array, seed: number, file = 'model.onnx'): Uint8Array {
  const info = readOnnxGraph(model, file);
  const roles = rolesOf(info);
  const byName = new Map(info.initializers.map((i) => [i.name, i]));
  const out = new ProtoWriter();
  for (const field of readFields(model)) {
    if (field.field !== F.model.graph || field.wireType !== 2) {
      out.raw(field);
      continue;
    }
    out.message(F.model.graph, (g) => {
      for (const gf of sub(field)) {
        if (gf.field !== F.graph.initializer) {
          g.raw(gf);
          continue;
        }
        const init = readInitializer(sub(gf));
        const known = byName.get(init.name);
        if (!known || init.dataType !== ONNX_FLOAT) {
          g.raw(gf);
          continue;
        }
        const size = init.dims.reduce((a, c) => a * c, 1);
        const role = roles.get(init.name) ?? defaultRole(init.dims);
        const data =
          role.kind === 'constant'
            ? new Float32Array(size).fill(role.value)
            : seededFloats(size, role.kind === 'weight' ? Math.sqrt(6 / role.fanIn) : 1 / Math.sqrt(role.fanIn), seed, init.name);
        g.message(F.graph.initializer, (t) => writeTensor(t, { name: init.name, dims: init.dims, data }));
      }
    });
  }
  return out.finish();
}
