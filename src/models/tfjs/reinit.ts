/**
 * The victim's architecture, freshly initialised with a seed (the MAD paper's best surrogate): a
 * layers model rebuilt from its topology alone, every weight re-drawn deterministically from
 * (seed, weight name). Kernels uniform in ±√(6/fan_in) (He), biases uniform in ±1/√fan_in, batch
 * norm gamma 1, beta 0, moving mean 0, moving variance 1. Same seed, same weights, on any backend.
 * Graph models (graph-reinit.ts) and ONNX (../onnx/graph.ts) follow the same rules, reading each
 * weight's role from the nodes that use it; all draw from seededFloats (../random.ts).
 */
import { seededFloats } from '../random.js';
import { tf, type LayersModel, type Tensor } from './tf.js';

export interface ReinitOptions {
  /** Make every layer trainable (default true): a fresh surrogate has no reason to freeze a base, and full-Jacobian MAD then sees all its parameters. */
  trainAll?: boolean;
}

type Role = { kind: 'weight'; fanIn: number } | { kind: 'bias'; fanIn: number } | { kind: 'constant'; value: number };

const CONSTANTS: Readonly<Record<string, number>> = { gamma: 1, beta: 0, moving_mean: 0, moving_variance: 1 };

function suffix(originalName: string): string {
  return originalName.slice(originalName.lastIndexOf('/') + 1).replace(/_\d+$/, '');
}

/** Fan-in of a kernel: a depthwise kernel [kh, kw, in, mult] sees kh·kw inputs; others all but the last axis. */
function kernelFanIn(name: string, shape: readonly number[]): number {
  if (name === 'depthwise_kernel') return shape.slice(0, -2).reduce((a, b) => a * b, 1);
  return shape.length > 1 ? shape.slice(0, -1).reduce((a, b) => a * b, 1) : Math.max(1, shape[0] ?? 1);
}

function rolesOfLayer(layer: LayersModel['layers'][number]): Role[] {
  const names = layer.weights.map((w) => suffix(w.originalName));
  const kernelIndex = names.findIndex((n) => n.endsWith('kernel'));
  // A bias follows the layer's last kernel (pointwise after depthwise in a separable convolution).
  const lastKernel = names
    .map((n, i) => (n.endsWith('kernel') ? i : -1))
    .filter((i) => i >= 0)
    .pop();
  return layer.weights.map((w, i) => {
    const name = names[i];
    if (name in CONSTANTS) return { kind: 'constant', value: CONSTANTS[name] };
    if (name.endsWith('kernel') || name === 'embeddings') return { kind: 'weight', fanIn: kernelFanIn(name, w.shape as number[]) };
    if (name === 'bias' && kernelIndex >= 0) {
      const k = layer.weights[lastKernel ?? kernelIndex];
      return { kind: 'bias', fanIn: kernelFanIn(names[lastKernel ?? kernelIndex], k.shape as number[]) };
    }
    const shape = w.shape as number[];
    return shape.length > 1 ? { kind: 'weight', fanIn: kernelFanIn('', shape) } : { kind: 'bias', fanIn: Math.max(1, shape[0] ?? 1) };
  });
}

/** Overwrites every weight of `model` (trainable or not) with seeded values; see the file comment. */
export function reinitWeights(model: LayersModel, seed: number): void {
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    const roles = rolesOfLayer(layer);
    const values: Tensor[] = layer.weights.map((w, i) => {
      const shape = w.shape as number[];
      const size = shape.reduce((a, b) => a * b, 1);
      const role = roles[i];
      const data =
        role.kind === 'constant'
          ? new Float32Array(size).fill(role.value)
          : seededFloats(size, role.kind === 'weight' ? Math.sqrt(6 / role.fanIn) : 1 / Math.sqrt(role.fanIn), seed, w.originalName);
      return tf.tensor(data, shape, 'float32');
    });
    try {
      layer.setWeights(values);
    } finally {
      tf.dispose(values);
    }
  }
}

/** A new model with `model`'s topology and seeded fresh weights; `model` itself is left as it was. */
export async function reinitLayersModel(model: LayersModel, seed: number, options: ReinitOptions = {}): Promise<LayersModel> {
  const topology = model.toJSON(null, false) as tf.io.ModelJSON['modelTopology'];
  return reinitFromTopology(topology as object, seed, options);
}

/** A model built from a topology (model.json's `modelTopology`) with seeded weights; no weight file needed. */
export async function reinitFromTopology(topology: object, seed: number, options: ReinitOptions = {}): Promise<LayersModel> {
  // Building a model draws its initializers' random values: throwaway work, overwritten below.
  const fresh = await tf.models.modelFromJSON({ modelTopology: topology } as tf.io.ModelJSON as never);
  if (options.trainAll ?? true) for (const layer of fresh.layers) layer.trainable = true;
  reinitWeights(fresh, seed);
  return fresh;
}
