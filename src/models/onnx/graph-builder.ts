/**
 * An ONNX graph under construction, for the code that writes one node by node (layers-to-onnx.ts,
 * the training step in ../training/onnx-train-steps.ts): nodes and initializers in the order they
 * are added, and fresh value names from one counter (`base_0`, `base_1`, ...). The result goes to
 * writeOnnxModel as `nodes` and `initializers`.
 */
import type { OnnxNodeSpec, OnnxTensorSpec } from './writer.js';

export class OnnxGraphBuilder {
  readonly nodes: OnnxNodeSpec[] = [];
  readonly initializers: OnnxTensorSpec[] = [];
  private counter = 0;

  /** A name not used before: `base`, the separator, then the counter. */
  fresh(base: string, separator = '_'): string {
    return `${base}${separator}${this.counter++}`;
  }

  /** Adds `op` with one fresh output (named after `base`, default the op in lower case) and returns that output. */
  node(op: string, inputs: string[], attributes?: OnnxNodeSpec['attributes'], base = op.toLowerCase()): string {
    const output = this.fresh(base);
    this.nodes.push({ op, inputs, outputs: [output], attributes });
    return output;
  }

  /** Adds `op` with `outputs` fresh outputs (named after the op in lower case) and returns them. */
  nodeOutputs(op: string, inputs: string[], attributes: OnnxNodeSpec['attributes'] | undefined, outputs: number): string[] {
    const names = Array.from({ length: outputs }, () => this.fresh(op.toLowerCase()));
    this.nodes.push({ op, inputs, outputs: names, attributes });
    return names;
  }

  /** Adds an initializer under exactly `name` and returns the name. */
  initializer(name: string, dims: number[], data: Float32Array | BigInt64Array): string {
    this.initializers.push({ name, dims, data });
    return name;
  }

  /** Adds an initializer under a fresh name after `base` and returns that name. */
  constant(base: string, dims: number[], data: Float32Array | BigInt64Array): string {
    return this.initializer(this.fresh(base), dims, data);
  }
}
