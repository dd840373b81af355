/**
 * A surrogate on any TF.js model: a LayersModel of any topology (residual adds, batch norm,
 * depthwise convolutions) or a GraphModel (tfjs-converter output). The forward pass is the model's
 * own (`apply` / `execute`), in chunks with a yield between them, read with `await t.data()`.
 *
 * Full-Jacobian Gram matrices (LayersModels only: a GraphModel's weights are constants, not
 * variables) by autodiff: for each input and class k one backward pass of log p_k over all trainable
 * variables (tf.variableGrads), the K gradients stacked into G (K×D) and M = G Gᵀ. Per-example
 * gradients need one pass per (input, class): replicating the batch does not help, since a shared
 * weight's gradient sums over the rows. Where the backend lacks a backward kernel (wasm:
 * Conv2DBackpropFilter, DepthwiseConv2dNativeBackpropFilter/Input) the Gram runs on cpu.
 */
import { kernelsMissing, onCpu, withCpuFallback } from './backend.js';
import { z } from 'zod';
import { parseOptions } from '../../validation/index.js';
import { ModelError, UnsupportedModelError } from '../errors.js';
import { surrogateFields } from '../option-fields.js';
import type { SurrogateModel } from '../surrogate-model.js';
import { checkRows, defaultChunkRows, looksLikeProbabilities, probabilitiesInChunks, yieldToEventLoop, type SurrogateOutput } from '../surrogate-output.js';
import { tf, type LayersModel, type Tensor, type Variable } from './tf.js';
import type { ProbBatch } from '../../defenses/types.js';

export interface TfjsSurrogateOptions {
  /** What the model outputs (default 'auto': detected per batch; see ../surrogate-output.ts). */
  output?: SurrogateOutput;
  /**
   * Rows per forward pass; the event loop runs between chunks. Default: about 128k input values per
   * chunk (one 224×224×3 image, 64 MNIST rows at most), since wasm and cpu compute synchronously and
   * batching buys them little.
   */
  chunkRows?: number;
  /** GraphModel: the output node to read (default the model's first output). */
  outputName?: string;
  /** Overrides the input shape when the model leaves it open (GraphModels often do). */
  inputShape?: readonly number[];
  /** Classes, when the model's output shape does not say (else found by one forward pass). */
  classes?: number;
}

type AnyModel = LayersModel | tf.GraphModel;

/** The options loadSurrogate passes on, checked in its words. */
const tfjsSurrogateSchema = z.strictObject(
  {
    output: surrogateFields.output,
    chunkRows: surrogateFields.chunkRows,
    outputName: surrogateFields.outputName,
    inputShape: surrogateFields.inputShape,
    classes: surrogateFields.classes,
  } satisfies Record<keyof TfjsSurrogateOptions, z.ZodType>,
  { error: 'an object, e.g. { output: "logits", chunkRows: 64 }' },
);

/** Backward kernels of convolutions, which some backends lack (wasm: the filter gradients and the depthwise input gradient). */
export const BACKWARD_KERNELS: readonly string[] = [
  'Conv2DBackpropFilter',
  'Conv2DBackpropInput',
  'DepthwiseConv2dNativeBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
];
const CONVOLUTIONS = new Set(['Conv1D', 'Conv2D', 'Conv2DTranspose', 'DepthwiseConv2D', 'SeparableConv2D', 'Conv3D']);
const announced = new Set<string>();

function isGraphModel(model: AnyModel): model is tf.GraphModel {
  return model instanceof tf.GraphModel;
}

/** Whether a layers model ends in a softmax (a Softmax layer, or an activation of softmax on its last layer). */
function endsInSoftmax(model: LayersModel): boolean {
  const last = model.layers[model.layers.length - 1];
  if (!last) return false;
  if (last.getClassName() === 'Softmax') return true;
  const activation = (last.getConfig() as Record<string, unknown>).activation;
  return activation === 'softmax';
}

export class TfjsSurrogate implements SurrogateModel {
  readonly classes: number;
  readonly inputShape: readonly number[];
  readonly differentiable: boolean;
  private readonly width: number;
  private readonly output: SurrogateOutput;
  private readonly chunkRows: number;
  private readonly outputName?: string;
  private readonly variables: readonly Variable[];

  private constructor(
    readonly model: AnyModel,
    inputShape: readonly number[],
    classes: number,
    options: TfjsSurrogateOptions,
  ) {
    this.inputShape = inputShape;
    this.width = inputShape.reduce((a, b) => a * b, 1);
    this.classes = classes;
    this.chunkRows = options.chunkRows ?? defaultChunkRows(this.width);
    this.outputName = options.outputName;
    this.differentiable = !isGraphModel(model) && model.trainableWeights.length > 0;
    this.output = options.output ?? (!isGraphModel(model) && endsInSoftmax(model) ? 'probs' : 'auto');
    this.variables = isGraphModel(model) ? [] : model.trainableWeights.map((w) => w.read() as Variable);
  }

  /** Wraps a loaded model (which the surrogate then owns: dispose() disposes it). */
  static async create(model: AnyModel, options: TfjsSurrogateOptions = {}): Promise<TfjsSurrogate> {
    parseOptions(tfjsSurrogateSchema, options, { error: ModelError });
    if (model.inputs.length !== 1)
      throw new UnsupportedModelError(
        `the surrogate feeds one input tensor, but the model has ${model.inputs.length} (${model.inputs.map((i) => i.name).join(', ')})`,
      );
    const declared = options.inputShape ?? (model.inputs[0].shape ?? []).slice(1);
    if (declared.length === 0 || !declared.every((d): d is number => typeof d === 'number' && d > 0)) {
      throw new UnsupportedModelError(`the model’s input shape ${JSON.stringify(model.inputs[0].shape)} is not fixed; pass inputShape (e.g. [224, 224, 3])`);
    }
    const outShape = isGraphModel(model) ? model.outputs.find((o) => !options.outputName || o.name === options.outputName)?.shape : model.outputs[0].shape;
    let classes = options.classes ?? outShape?.[outShape.length - 1];
    const surrogate = new TfjsSurrogate(model, declared, typeof classes === 'number' && classes > 0 ? classes : 0, options);
    if (!(typeof classes === 'number' && classes > 0)) {
      // The output shape is open: one forward pass on zeros tells.
      const out = await surrogate.forward(tf.zeros([1, ...declared]));
      classes = out.size;
      out.dispose();
      return new TfjsSurrogate(model, declared, classes, options);
    }
    return surrogate;
  }

  /** Raw outputs for a batch; disposes `x`. */
  private async forward(x: Tensor): Promise<Tensor> {
    const model = this.model;
    try {
      if (!isGraphModel(model)) return tf.tidy(() => (model.predict(x) as Tensor).reshape([x.shape[0], -1]));
      try {
        return tf.tidy(() => (model.execute(x, this.outputName) as Tensor).reshape([x.shape[0], -1]));
      } catch (error) {
        // Graphs with control flow or dynamic shapes run only through executeAsync.
        if (!/executeAsync/.test(error instanceof Error ? error.message : '')) throw error;
        const out = (await model.executeAsync(x, this.outputName)) as Tensor;
        const flat = out.reshape([x.shape[0], -1]);
        out.dispose();
        return flat;
      }
    } finally {
      x.dispose();
    }
  }

  probsAsync(inputs: Float32Array, rows: number): Promise<ProbBatch> {
    return probabilitiesInChunks(inputs, rows, {
      width: this.width,
      classes: this.classes,
      chunkRows: this.chunkRows,
      output: this.output,
      run: async (chunk, n) => {
        const out = await this.forward(tf.tensor(chunk, [n, ...this.inputShape]));
        try {
          if (out.shape[1] !== this.classes) throw new UnsupportedModelError(`the model answered ${out.shape[1]} values per row, not ${this.classes}`);
          return Float32Array.from((await out.data()) as Float32Array);
        } finally {
          out.dispose();
        }
      },
    });
  }

  /** B×K×K Gram matrices over all trainable parameters (row-major); see the file comment. */
  async gramAsync(inputs: Float32Array, rows: number): Promise<Float64Array> {
    if (!this.differentiable)
      throw new UnsupportedModelError(
        'this surrogate is forward-only (a GraphModel, or no trainable weights): it has no Gram matrices; use mad with jacobian=last-layer',
      );
    checkRows(inputs, rows, this.width);
    const k2 = this.classes * this.classes;
    const out = new Float64Array(rows * k2);
    for (let r = 0; r < rows; r++) {
      if (r > 0) await yieldToEventLoop();
      const row = inputs.subarray(r * this.width, (r + 1) * this.width);
      const gram = this.gramOnCpu() ? onCpu(() => this.gramOfRow(row)) : withCpuFallback('the surrogate’s Gram matrices', () => this.gramOfRow(row));
      try {
        out.set(await gram.data(), r * k2);
      } finally {
        gram.dispose();
      }
    }
    return out;
  }

  /**
   * Whether the backend lacks a backward kernel this model's convolutions need: then the Gram runs
   * on cpu from the start (a backward pass failing half-way leaves tensors behind).
   */
  private gramOnCpu(): boolean {
    if (tf.getBackend() === 'cpu' || isGraphModel(this.model)) return false;
    const convolutional = this.model.layers.some((l) => CONVOLUTIONS.has(l.getClassName()));
    const missing = convolutional ? kernelsMissing(BACKWARD_KERNELS) : [];
    if (missing.length > 0 && !announced.has(tf.getBackend())) {
      announced.add(tf.getBackend());
      process.stderr.write(`tfjs backend ${tf.getBackend()} has no ${missing.join(', ')} kernel: running the surrogate’s Gram matrices on cpu\n`);
    }
    return missing.length > 0;
  }

  /** K×K Gram matrix of one input: K backward passes, gradients flattened and stacked. */
  private gramOfRow(row: Float32Array): Tensor {
    const model = this.model as LayersModel;
    return tf.tidy(() => {
      const x = tf.tensor(row, [1, ...this.inputShape]);
      const raw = (model.apply(x, { training: false }) as Tensor).reshape([1, -1]);
      const probs = this.output === 'probs' || (this.output === 'auto' && looksLikeProbabilities(raw.dataSync(), 1, this.classes));
      const rowsOfG: Tensor[] = [];
      for (let k = 0; k < this.classes; k++) {
        const { grads } = tf.variableGrads(() => {
          const y = (model.apply(x, { training: false }) as Tensor).reshape([1, -1]);
          const logp = probs ? tf.log(tf.maximum(y, 1e-30)) : tf.logSoftmax(y);
          return logp.slice([0, k], [1, 1]).sum() as tf.Scalar;
        }, this.variables as Variable[]);
        rowsOfG.push(tf.concat(this.variables.map((v) => (grads[v.name] ?? tf.zeros(v.shape)).reshape([-1]))));
      }
      const g = tf.stack(rowsOfG);
      return tf.matMul(g, g, false, true);
    });
  }

  dispose(): void {
    this.model.dispose();
  }
}
