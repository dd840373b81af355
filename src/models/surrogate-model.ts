/**
 * The contract every surrogate satisfies, whatever runs it (a TF.js LayersModel of any topology, a
 * GraphModel, an ONNX session). The serving layer's batcher and the defense context code against
 * this, never against a runtime. Inputs are preprocessed rows: `rows` × prod(inputShape) float32,
 * row-major, in the layout the model expects.
 */
import type { ProbBatch } from '../defenses/types.js';

export interface SurrogateModel {
  /** Classes the surrogate answers (K). */
  readonly classes: number;
  /** Shape of one example as the model takes it, without the batch dimension (e.g. [224, 224, 3]). */
  readonly inputShape: readonly number[];
  /** Whether `gram` is available (autodiff through the model); false for forward-only runtimes such as ONNX. */
  readonly differentiable: boolean;
  /** The surrogate's softmax, B×K. Asynchronous: the event loop keeps running while it computes. */
  probsAsync(inputs: Float32Array, rows: number): Promise<ProbBatch>;
  /** B×K×K Gram matrices M = G Gᵀ of the log-probability gradients over all parameters (differentiable models only). */
  gramAsync?(inputs: Float32Array, rows: number): Promise<Float64Array>;
  /** Why the surrogate can no longer answer (its worker thread died, it was disposed); undefined while it can. */
  failure?(): Error | undefined;
  dispose(): void;
}
