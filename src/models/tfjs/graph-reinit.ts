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
import { fusedOps, GraphIndex, kernelFanIn, product, weightOp, type GraphNodeJson } from './graph-index.js';
import { specBytes } from './model-dir.js';
import { seededFloats } from '../random.js';
import { tf } from './tf.js';

/** What a graph constant is taken for, and why (the node that gave it away). */
export type GraphWeightRole =
  | { readonly kind: 'weight'; readonly fanIn: number; readonly why: string }
  | { readonly kind: 'bias'; readonly fanIn: number; readonly why: string }
  | { readonly kind: 'constant'; readonly value: number; readonly why: string }
  | { readonly kind: 'keep'; readonly why: string };

const FUSED = new Set(['_FusedConv2D', 'FusedDepthwiseConv2dNative', '_FusedMatMul']);
const BATCH_NORM = new Set(['FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3']);
const ADDS = new Set(['BiasAdd', 'Add', 'AddV2', 'Sub']);
const SCALES = new Set(['Mul', 'RealDiv']);
const BATCH_NORM_VALUES = [1, 0, 0, 1];

/** Gives a float constant its role; the first rule that gives one wins. */
type AssignRole = (name: string | undefined, role: GraphWeightRole) => void;

/** Rules 1–3 for one node: its kernels, its fused arguments, its batch norm. */
function kernelAndNormRoles(graph: GraphIndex, node: GraphNodeJson, assign: AssignRole): void {
  const op = node.op ?? '';
  for (const [index, name] of graph.constantInputs(node)) {
    const fanIn = kernelFanIn(node, index, graph.shapeOf(name));
    if (fanIn !== undefined) assign(name, { kind: 'weight', fanIn: Math.max(1, fanIn), why: `${op} kernel (${node.name})` });
  }
  if (FUSED.has(op)) {
    const fused = fusedOps(node);
    const fanIn = Math.max(1, graph.nodeFanIn(node) ?? 1);
    for (const [index, name] of graph.constantInputs(node)) {
      if (index < 2) continue;
      const arg = index - 2;
      if (fused[0] === 'FusedBatchNorm' && arg < 4)
        assign(name, { kind: 'constant', value: BATCH_NORM_VALUES[arg], why: `${op} fused batch norm argument ${arg} (${node.name})` });
      else if (fused[0] !== 'FusedBatchNorm' && arg === 0 && (fused.length === 0 || fused[0] === 'BiasAdd'))
        assign(name, { kind: 'bias', fanIn, why: `${op} fused BiasAdd (${node.name})` });
    }
  }
  if (BATCH_NORM.has(op)) {
    for (const [index, name] of graph.constantInputs(node)) {
      if (index >= 1 && index <= 4)
        assign(name, {
          kind: 'constant',
          value: BATCH_NORM_VALUES[index - 1],
          why: `${op} ${['scale', 'offset', 'mean', 'variance'][index - 1]} (${node.name})`,
        });
    }
  }
}

/** Rule 4 for one node: a bias added to a weight node's output. */
function biasRoles(graph: GraphIndex, node: GraphNodeJson, assign: AssignRole): void {
  if (!ADDS.has(node.op ?? '')) return;
  for (const [index, name] of graph.constantInputs(node)) {
    const other = graph.computedInputsBesides(node, index)[0];
    const producer = other === undefined ? undefined : graph.producerOf(other);
    if (!producer || !weightOp(producer.op)) continue;
    const fanIn = graph.nodeFanIn(producer);
    if (fanIn !== undefined) assign(name, { kind: 'bias', fanIn: Math.max(1, fanIn), why: `${node.op} after ${producer.op} (${producer.name})` });
  }
}

/** Rule 5 for one node: folded normalisation (after weights) or preprocessing (before any). */
function foldedRoles(graph: GraphIndex, node: GraphNodeJson, assign: AssignRole): void {
  const op = node.op ?? '';
  if (!ADDS.has(op) && !SCALES.has(op)) return;
  for (const [index, name] of graph.constantInputs(node)) {
    if (product(graph.shapeOf(name)) <= 1) continue;
    const after = graph.computedInputsBesides(node, index).some((input) => {
      const producer = graph.producerOf(input);
      return !!producer?.name && graph.dependsOnWeights(producer.name);
    });
    if (!after) assign(name, { kind: 'keep', why: `${op} on the graph input before any weight: preprocessing (${node.name})` });
    else
      assign(name, {
        kind: 'constant',
        value: SCALES.has(op) ? 1 : 0,
        why: `${op} after weights: a folded normalisation ${SCALES.has(op) ? 'scale' : 'offset'} (${node.name})`,
      });
  }
}

/** Rule 6: a constant no other rule placed, by its shape. */
function roleByShape(shape: readonly number[]): GraphWeightRole {
  if (product(shape) <= 1) return { kind: 'keep', why: 'a single value: part of the architecture (a bound, an epsilon, a scale)' };
  if (shape.length > 1) return { kind: 'weight', fanIn: Math.max(1, product(shape.slice(0, -1))), why: 'by its shape (no known consumer)' };
  return { kind: 'bias', fanIn: Math.max(1, shape[0]), why: 'by its shape (no known consumer)' };
}

/** The role of every float32 weight in the manifest, read from the graph (see the file comment). */
export function graphWeightRoles(topology: unknown, specs: readonly tf.io.WeightsManifestEntry[]): Map<string, GraphWeightRole> {
  const graph = new GraphIndex(topology, specs);
  const roles = new Map<string, GraphWeightRole>();
  const assign: AssignRole = (name, role) => {
    if (name !== undefined && graph.floats.has(name) && !roles.has(name)) roles.set(name, role);
  };
  // Rules 1–3 over every node, then rule 4 over every node, then rule 5: earlier rules win.
  for (const node of graph.nodes) kernelAndNormRoles(graph, node, assign);
  for (const node of graph.nodes) biasRoles(graph, node, assign);
  for (const node of graph.nodes) foldedRoles(graph, node, assign);
  for (const name of graph.floats) if (!roles.has(name)) roles.set(name, roleByShape(graph.shapeOf(name)));
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
