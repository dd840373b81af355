/**
 * Reading a TF.js graph model's topology for graph-reinit.ts: which node produces an input, which
 * weight constant an input reads (through Identity nodes), the fan-in of the kernel a node takes,
 * and whether a node's value depends on a weight node.
 */
import type { tf } from './tf.js';

export interface GraphNodeJson {
  name?: string;
  op?: string;
  input?: string[];
  attr?: Record<string, { b?: boolean; list?: { s?: (string | number[])[] } } | undefined>;
}

const CONV = new Set(['Conv1D', 'Conv2D', 'Conv3D', '_FusedConv2D']);
const DEPTHWISE = new Set(['DepthwiseConv2d', 'DepthwiseConv2dNative', 'FusedDepthwiseConv2dNative']);
const TRANSPOSED = new Set(['Conv2DBackpropInput']);
const MATMUL = new Set(['MatMul', '_FusedMatMul', 'BatchMatMul', 'BatchMatMulV2']);
const PASS_THROUGH = new Set(['Identity']);

export const product = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** A node input's producing node name: "^ctrl" (control edges) is none, "name:1" is "name". */
export function producerName(input: string): string | undefined {
  if (input.startsWith('^')) return undefined;
  const colon = input.lastIndexOf(':');
  return colon > 0 && /^\d+$/.test(input.slice(colon + 1)) ? input.slice(0, colon) : input;
}

/** The fused operations of a fused node (base64-encoded strings in model.json, as tfjs-converter writes them). */
export function fusedOps(node: GraphNodeJson): string[] {
  return (node.attr?.fused_ops?.list?.s ?? []).map((s) => (Array.isArray(s) ? String.fromCharCode(...s) : Buffer.from(s, 'base64').toString('latin1')));
}

const flag = (node: GraphNodeJson, name: string): boolean => node.attr?.[name]?.b === true;

/** Fan-in of a kernel consumed by `node` at input `index`, or undefined when `node` takes no kernel there. */
export function kernelFanIn(node: GraphNodeJson, index: number, shape: readonly number[]): number | undefined {
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

export const weightOp = (op: string | undefined): boolean => op !== undefined && (CONV.has(op) || DEPTHWISE.has(op) || TRANSPOSED.has(op) || MATMUL.has(op));

/** A graph's nodes and weight constants, with the look-ups the role rules need. */
export class GraphIndex {
  readonly nodes: readonly GraphNodeJson[];
  /** Shapes of every constant in the manifest, by name. */
  readonly shapes: ReadonlyMap<string, readonly number[]>;
  /** The float32 constants: the only ones that get a role. */
  readonly floats: ReadonlySet<string>;
  private readonly byName: ReadonlyMap<string, GraphNodeJson>;
  // Whether a node's value depends on a weight node (memoised; a loop's back edge counts as no).
  private readonly afterWeights = new Map<string, boolean>();

  constructor(topology: unknown, specs: readonly tf.io.WeightsManifestEntry[]) {
    this.nodes = Array.isArray((topology as { node?: unknown })?.node) ? (topology as { node: GraphNodeJson[] }).node : [];
    this.shapes = new Map(specs.map((s) => [s.name, s.shape]));
    this.floats = new Set(specs.filter((s) => s.dtype === 'float32').map((s) => s.name));
    this.byName = new Map(this.nodes.filter((n) => typeof n.name === 'string').map((n) => [n.name as string, n]));
  }

  shapeOf(name: string): readonly number[] {
    return this.shapes.get(name) ?? [];
  }

  /** The constant an input reads, through Identity nodes; undefined when it reads a computed value. */
  constantOf(input: string): string | undefined {
    for (let name = producerName(input), hops = 0; name !== undefined && hops < 64; hops++) {
      if (this.shapes.has(name)) return name;
      const node = this.byName.get(name);
      if (!node || !PASS_THROUGH.has(node.op ?? '') || !node.input?.length) return undefined;
      name = producerName(node.input[0]);
    }
    return undefined;
  }

  /** The node producing an input, through Identity nodes. */
  producerOf(input: string): GraphNodeJson | undefined {
    let node = this.byName.get(producerName(input) ?? '');
    for (let hops = 0; node && PASS_THROUGH.has(node.op ?? '') && node.input?.length && hops < 64; hops++)
      node = this.byName.get(producerName(node.input[0]) ?? '');
    return node;
  }

  /** Fan-in of the kernel a weight node takes (its constant input of rule 1), when it has one. */
  nodeFanIn(node: GraphNodeJson): number | undefined {
    for (const [index, input] of (node.input ?? []).entries()) {
      const name = this.constantOf(input);
      const fanIn = name === undefined ? undefined : kernelFanIn(node, index, this.shapeOf(name));
      if (fanIn !== undefined) return fanIn;
    }
    return undefined;
  }

  /** Whether a node's value depends on a weight node. */
  dependsOnWeights(name: string): boolean {
    const known = this.afterWeights.get(name);
    if (known !== undefined) return known;
    this.afterWeights.set(name, false);
    const node = this.byName.get(name);
    const result =
      !!node &&
      (weightOp(node.op) ||
        (node.input ?? []).some((input) => {
          const producer = producerName(input);
          return producer !== undefined && !this.shapes.has(producer) && this.dependsOnWeights(producer);
        }));
    this.afterWeights.set(name, result);
    return result;
  }

  /** The constant inputs of a node: [input index, constant name]. */
  constantInputs(node: GraphNodeJson): [number, string][] {
    return (node.input ?? []).flatMap((input, index): [number, string][] => {
      const name = this.constantOf(input);
      return name === undefined ? [] : [[index, name]];
    });
  }

  /** A node's computed inputs other than input `index` (control edges left out). */
  computedInputsBesides(node: GraphNodeJson, index: number): string[] {
    return (node.input ?? []).filter((input, i) => i !== index && !input.startsWith('^') && this.constantOf(input) === undefined);
  }
}
