/**
 * Seeded re-initialisation of a TF.js graph model (tfjs-converter output, converted from a
 * SavedModel): its weights are named constants of the weights manifest, consumed by the graph's
 * nodes (`modelTopology.node`). Each float constant's role is read from the node(s) that consume it
 * (following Identity nodes), then the constant is re-drawn with the same rules as layers models
 * (reinit.ts) and ONNX (../onnx/graph.ts): kernels uniform in ±√(6/fan_in), biases uniform in
 * ±1/√fan_in, normalisation scale 1 and offset 0 (batch norm gamma 1, beta 0, mean 0, variance 1).
 * Everything happens on the artifacts (weight bytes and manifest), before a model is built; the
 * trained values are never decoded.
 *
 * How each kind of constant is recognised, in this order (the first rule that applies wins):
 *   1. Kernel: input 1 of Conv1D/Conv2D/Conv3D/_FusedConv2D (fan-in: every axis but the last,
 *      kh·kw·c_in), of DepthwiseConv2d(Native)/FusedDepthwiseConv2dNative (fan-in kh·kw: every axis
 *      but the last two), of Conv2DBackpropInput (kh·kw·c_in, c_in its last axis), or either input of
 *      MatMul/_FusedMatMul/BatchMatMul(V2) (fan-in: the contracted axis, transpose_a/b and adj_x/y
 *      respected).
 *   2. Fused arguments: input 2 of _FusedConv2D/FusedDepthwiseConv2dNative/_FusedMatMul whose
 *      `fused_ops` start with BiasAdd is a bias (fan-in of that node's kernel); with FusedBatchNorm,
 *      inputs 2–5 are scale/offset/mean/variance (1/0/0/1). A fused Prelu's alpha falls to rule 6.
 *   3. Batch norm: inputs 1–4 of FusedBatchNorm/V2/V3 (scale 1, offset 0, mean 0, variance 1).
 *   4. Bias: a constant added (BiasAdd, Add, AddV2, Sub) to the output of a node of rule 1, directly
 *      or through Identity (fan-in of that node's kernel).
 *   5. Folded normalisation or preprocessing: a constant with more than one value in Mul, RealDiv,
 *      Add, AddV2, Sub or BiasAdd. When the other operand depends on a node of rule 1 it is a folded
 *      normalisation (batch norm as x·s + o, layer norm's gamma and beta): Mul/RealDiv 1, the others
 *      0. When it does not (the graph input's own mean or scale, before any weight) it is
 *      preprocessing and is kept.
 *   6. Anything else: a single value is kept (a clamp bound such as ReLU6's 6, an epsilon, an input
 *      scale: part of the architecture, not a learned weight); otherwise by its shape, as for ONNX
 *      and layers: two axes or more a kernel with fan-in every axis but the last, one axis a bias with
 *      fan-in its length.
 * Constants that are not float32 (int32 shapes, axes, paddings, strides, indices; bool; string) are
 * kept byte for byte. Quantized float weights (uint8, float16 in the manifest) are re-drawn as plain
 * float32 (their stored values are never needed); kept ones keep their bytes and quantization.
 * The stream of each weight is determined by (seed, weight name): same seed, same weights.
 */
import { ModelError } from '../errors.js';
import { specBytes } from './model-dir.js';
import { seededFloats } from '../random.js';
import { tf } from './tf.js';

/** What a graph constant is taken for, and why (the node that gave it away). */
export type GraphWeightRole =
  | { readonly kind: 'weight'; readonly fanIn: number; readonly why: string }
  | { readonly kind: 'bias'; readonly fanIn: number; readonly why: string }
  | { readonly kind: 'constant'; readonly value: number; readonly why: string }
  | { readonly kind: 'keep'; readonly why: string };

interface GraphNodeJson {
  name?: string;
  op?: string;
  input?: string[];
  attr?: Record<string, { b?: boolean; list?: { s?: (string | number[])[] } } | undefined>;
}

const CONV = new Set(['Conv1D', 'Conv2D', 'Conv3D', '_FusedConv2D']);
const DEPTHWISE = new Set(['DepthwiseConv2d', 'DepthwiseConv2dNative', 'FusedDepthwiseConv2dNative']);
const TRANSPOSED = new Set(['Conv2DBackpropInput']);
const MATMUL = new Set(['MatMul', '_FusedMatMul', 'BatchMatMul', 'BatchMatMulV2']);
const FUSED = new Set(['_FusedConv2D', 'FusedDepthwiseConv2dNative', '_FusedMatMul']);
const BATCH_NORM = new Set(['FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3']);
const ADDS = new Set(['BiasAdd', 'Add', 'AddV2', 'Sub']);
const SCALES = new Set(['Mul', 'RealDiv']);
const PASS_THROUGH = new Set(['Identity']);
const BATCH_NORM_VALUES = [1, 0, 0, 1];

const product = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** A node input's producing node name: "^ctrl" (control edges) is none, "name:1" is "name". */
function producerName(input: string): string | undefined {
  if (input.startsWith('^')) return undefined;
  const colon = input.lastIndexOf(':');
  return colon > 0 && /^\d+$/.test(input.slice(colon + 1)) ? input.slice(0, colon) : input;
}

/** The fused operations of a fused node (base64-encoded strings in model.json, as tfjs-converter writes them). */
function fusedOps(node: GraphNodeJson): string[] {
  return (node.attr?.fused_ops?.list?.s ?? []).map((s) => (Array.isArray(s) ? String.fromCharCode(...s) : Buffer.from(s, 'base64').toString('latin1')));
}

const flag = (node: GraphNodeJson, name: string): boolean => node.attr?.[name]?.b === true;

/** Fan-in of a kernel consumed by `node` at input `index`, or undefined when `node` takes no kernel there. */
function kernelFanIn(node: GraphNodeJson, index: number, shape: readonly number[]): number | undefined {
  const op = node.op ?? '';
  const rank = shape.length;
  if (CONV.has(op) && index === 1 && rank >= 2) return product(shape.slice(0, -1));
  if (DEPTHWISE.has(op) && index === 1 && rank >= 3) return product(shape.slice(0, -2));
  if (TRANSPOSED.has(op) && index === 1 && rank === 4) return shape[0] * shape[1] * shape[3];
  if (MATMUL.has(op) && (index === 0 || index === 1) && rank >= 2) {
    const transposed = index === 0 ? flag(node, 'transpose_a') || flag(node, 'adj_x') : flag(node, 'transpose_b') || flag(node, 'adj_y');
    // y = x·W: W's rows are contracted ([in, out], or [out, in] transposed); W·x contracts W's columns.
    if (index === 1) return transposed ? shape[rank - 1] : shape[rank - 2];
    return transposed ? shape[rank - 2] : shape[rank - 1];
  }
  return undefined;
}

const weightOp = (op: string | undefined): boolean => op !== undefined && (CONV.has(op) || DEPTHWISE.has(op) || TRANSPOSED.has(op) || MATMUL.has(op));

/** The role of every float32 weight in the manifest, read from the graph (see the file comment). */
export function graphWeightRoles(topology: unknown, specs: readonly tf.io.WeightsManifestEntry[]): Map<string, GraphWeightRole> {
  const nodes: GraphNodeJson[] = Array.isArray((topology as { node?: unknown })?.node) ? (topology as { node: GraphNodeJson[] }).node : [];
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  const floats = new Set(specs.filter((s) => s.dtype === 'float32').map((s) => s.name));
  const byName = new Map(nodes.filter((n) => typeof n.name === 'string').map((n) => [n.name as string, n]));

  /** The constant an input reads, through Identity nodes; undefined when it reads a computed value. */
  const constantOf = (input: string): string | undefined => {
    for (let name = producerName(input), hops = 0; name !== undefined && hops < 64; hops++) {
      if (shapes.has(name)) return name;
      const node = byName.get(name);
      if (!node || !PASS_THROUGH.has(node.op ?? '') || !node.input?.length) return undefined;
      name = producerName(node.input[0]);
    }
    return undefined;
  };
  /** The node producing an input, through Identity nodes. */
  const producerOf = (input: string): GraphNodeJson | undefined => {
    let node = byName.get(producerName(input) ?? '');
    for (let hops = 0; node && PASS_THROUGH.has(node.op ?? '') && node.input?.length && hops < 64; hops++) node = byName.get(producerName(node.input[0]) ?? '');
    return node;
  };
  /** Fan-in of the kernel a weight node takes (its constant input of rule 1), when it has one. */
  const nodeFanIn = (node: GraphNodeJson): number | undefined => {
    for (const [index, input] of (node.input ?? []).entries()) {
      const name = constantOf(input);
      const fanIn = name === undefined ? undefined : kernelFanIn(node, index, shapes.get(name) ?? []);
      if (fanIn !== undefined) return fanIn;
    }
    return undefined;
  };
  // Whether a node's value depends on a weight node (memoised; a loop's back edge counts as no).
  const afterWeights = new Map<string, boolean>();
  const dependsOnWeights = (name: string): boolean => {
    const known = afterWeights.get(name);
    if (known !== undefined) return known;
    afterWeights.set(name, false);
    const node = byName.get(name);
    const result =
      !!node &&
      (weightOp(node.op) ||
        (node.input ?? []).some((input) => {
          const producer = producerName(input);
          return producer !== undefined && !shapes.has(producer) && dependsOnWeights(producer);
        }));
    afterWeights.set(name, result);
    return result;
  };

  const roles = new Map<string, GraphWeightRole>();
  const set = (name: string | undefined, role: GraphWeightRole): void => {
    if (name !== undefined && floats.has(name) && !roles.has(name)) roles.set(name, role);
  };
  const consts = (node: GraphNodeJson): [number, string][] =>
    (node.input ?? []).flatMap((input, index): [number, string][] => {
      const name = constantOf(input);
      return name === undefined ? [] : [[index, name]];
    });

  // Rules 1–3: kernels, fused arguments, batch norm.
  for (const node of nodes) {
    const op = node.op ?? '';
    for (const [index, name] of consts(node)) {
      const fanIn = kernelFanIn(node, index, shapes.get(name) ?? []);
      if (fanIn !== undefined) set(name, { kind: 'weight', fanIn: Math.max(1, fanIn), why: `${op} kernel (${node.name})` });
    }
    if (FUSED.has(op)) {
      const fused = fusedOps(node);
      const fanIn = Math.max(1, nodeFanIn(node) ?? 1);
      for (const [index, name] of consts(node)) {
        if (index < 2) continue;
        const arg = index - 2;
        if (fused[0] === 'FusedBatchNorm' && arg < 4)
          set(name, { kind: 'constant', value: BATCH_NORM_VALUES[arg], why: `${op} fused batch norm argument ${arg} (${node.name})` });
        else if (fused[0] !== 'FusedBatchNorm' && arg === 0 && (fused.length === 0 || fused[0] === 'BiasAdd'))
          set(name, { kind: 'bias', fanIn, why: `${op} fused BiasAdd (${node.name})` });
      }
    }
    if (BATCH_NORM.has(op)) {
      for (const [index, name] of consts(node)) {
        if (index >= 1 && index <= 4)
          set(name, {
            kind: 'constant',
            value: BATCH_NORM_VALUES[index - 1],
            why: `${op} ${['scale', 'offset', 'mean', 'variance'][index - 1]} (${node.name})`,
          });
      }
    }
  }
  // Rule 4: a bias added to a weight node's output.
  for (const node of nodes) {
    if (!ADDS.has(node.op ?? '')) continue;
    const inputs = node.input ?? [];
    for (const [index, name] of consts(node)) {
      const other = inputs.find((input, i) => i !== index && !input.startsWith('^') && constantOf(input) === undefined);
      const producer = other === undefined ? undefined : producerOf(other);
      if (!producer || !weightOp(producer.op)) continue;
      const fanIn = nodeFanIn(producer);
      if (fanIn !== undefined) set(name, { kind: 'bias', fanIn: Math.max(1, fanIn), why: `${node.op} after ${producer.op} (${producer.name})` });
    }
  }
  // Rule 5: folded normalisation (after weights) or preprocessing (before any).
  for (const node of nodes) {
    const op = node.op ?? '';
    if (!ADDS.has(op) && !SCALES.has(op)) continue;
    const inputs = node.input ?? [];
    for (const [index, name] of consts(node)) {
      if (product(shapes.get(name) ?? []) <= 1) continue;
      const others = inputs.filter((input, i) => i !== index && !input.startsWith('^') && constantOf(input) === undefined);
      const after = others.some((input) => {
        const producer = producerOf(input);
        return !!producer?.name && dependsOnWeights(producer.name);
      });
      if (!after) set(name, { kind: 'keep', why: `${op} on the graph input before any weight: preprocessing (${node.name})` });
      else
        set(name, {
          kind: 'constant',
          value: SCALES.has(op) ? 1 : 0,
          why: `${op} after weights: a folded normalisation ${SCALES.has(op) ? 'scale' : 'offset'} (${node.name})`,
        });
    }
  }
  // Rule 6: anything else, by its shape.
  for (const name of floats) {
    if (roles.has(name)) continue;
    const shape = shapes.get(name) ?? [];
    if (product(shape) <= 1) roles.set(name, { kind: 'keep', why: 'a single value: part of the architecture (a bound, an epsilon, a scale)' });
    else if (shape.length > 1) roles.set(name, { kind: 'weight', fanIn: Math.max(1, product(shape.slice(0, -1))), why: 'by its shape (no known consumer)' });
    else roles.set(name, { kind: 'bias', fanIn: Math.max(1, shape[0]), why: 'by its shape (no known consumer)' });
  }
  return roles;
}

/** The weight bytes as one ArrayBuffer, whatever form the artifacts hold them in. */
function weightBytes(artifacts: tf.io.ModelArtifacts): ArrayBuffer {
  const data = artifacts.weightData;
  if (data === undefined) return new ArrayBuffer(0);
  return tf.io.CompositeArrayBuffer.join(data);
}

/**
 * The artifacts of a graph model with every float weight re-drawn from `seed` (see the file
 * comment); the topology and every kept weight are untouched, and `artifacts` itself is not changed.
 */
export function reinitGraphArtifacts(artifacts: tf.io.ModelArtifacts, seed: number, file = 'model.json'): tf.io.ModelArtifacts {
  const specs = artifacts.weightSpecs ?? [];
  const bytes = new Uint8Array(weightBytes(artifacts));
  const roles = graphWeightRoles(artifacts.modelTopology, specs);
  const parts: Uint8Array[] = [];
  const outSpecs: tf.io.WeightsManifestEntry[] = [];
  let offset = 0;
  for (const spec of specs) {
    const size = specBytes(spec, file);
    if (offset + size > bytes.length) throw new ModelError(`${file}: the weights manifest describes more bytes than the weight data holds (at ${spec.name})`);
    const role = roles.get(spec.name);
    if (spec.dtype !== 'float32' || role === undefined || role.kind === 'keep') {
      parts.push(bytes.subarray(offset, offset + size));
      outSpecs.push(spec);
    } else {
      const count = product(spec.shape);
      const values =
        role.kind === 'constant'
          ? new Float32Array(count).fill(role.value)
          : seededFloats(count, role.kind === 'weight' ? Math.sqrt(6 / role.fanIn) : 1 / Math.sqrt(role.fanIn), seed, spec.name);
      parts.push(new Uint8Array(values.buffer));
      // Re-drawn weights are plain float32: a quantized weight's scale and minimum no longer apply.
      const { quantization: _, ...plain } = spec;
      outSpecs.push({ ...plain, dtype: 'float32' });
    }
    offset += size;
  }
  const total = parts.reduce((sum, p) => sum + p.byteLength, 0);
  const weightData = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    weightData.set(part, at);
    at += part.byteLength;
  }
  return { ...artifacts, weightSpecs: outSpecs, weightData: weightData.buffer };
}

/** The artifacts a loaded GraphModel was built from (its topology, manifest and weight bytes). */
export async function graphModelArtifacts(model: tf.GraphModel): Promise<tf.io.ModelArtifacts> {
  let captured: tf.io.ModelArtifacts | undefined;
  await model.save({
    save: async (artifacts) => {
      captured = artifacts;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    },
  });
  if (!captured?.weightSpecs || captured.weightData === undefined)
    throw new ModelError('this GraphModel keeps no weight data to re-initialise; load it from its files (path) instead');
  return captured;
}

/** A new GraphModel: the topology of `artifacts` with seeded fresh weights (see the file comment). */
export async function reinitGraphModel(source: tf.io.ModelArtifacts | tf.GraphModel, seed: number, file?: string): Promise<tf.GraphModel> {
  const artifacts = source instanceof tf.GraphModel ? await graphModelArtifacts(source) : source;
  return tf.loadGraphModel(tf.io.fromMemory(reinitGraphArtifacts(artifacts, seed, file)));
}
