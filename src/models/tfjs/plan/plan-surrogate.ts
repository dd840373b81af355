/**
 * The defender's surrogate of the attacker's model, for MAD. By default a seeded, randomly
 * initialised, untrained network of the victim's architecture (the paper's best choice); or a model
 * loaded from disk. It answers the two things MAD asks: its softmax per input (last-layer MAD) and
 * per-input K×K Gram matrices of its log-probability gradients over all parameters (full Jacobian).
 */
import { z } from 'zod';
import { parseOptions, positiveInteger } from '../../../validation/index.js';
import { ModelInputError } from '../../errors.js';
import { namedChoice } from '../../option-fields.js';
import { createModel, type ModelSpec } from '../architectures.js';
import { withCpuFallback } from '../backend.js';
import { gramTensor, supportsDenseGram, type GramMethod } from './gram.js';
import { loadModel } from '../io.js';
import { planOf, type ModelPlan } from './plan.js';
import { checkInputs, predictProbs } from './predict.js';
import type { SurrogateModel } from '../../surrogate-model.js';
import { tf, type LayersModel } from '../tf.js';
import type { ProbBatch } from '../../../defenses/types.js';

export interface SurrogateOptions {
  /** Inputs per Gram computation (default 128; the autodiff method works on K times as many rows). */
  gramChunkRows?: number;
  /** Force a Gram method (default: closed-form dense when the model allows it, else autodiff). */
  gramMethod?: GramMethod;
}

const GRAM_METHODS: readonly GramMethod[] = ['dense', 'autodiff'];

const surrogateOptionsSchema = z.strictObject(
  {
    gramChunkRows: positiveInteger().default(128),
    gramMethod: namedChoice(GRAM_METHODS).optional(),
  } satisfies Record<keyof SurrogateOptions, z.ZodType>,
  { error: 'an object, e.g. { gramChunkRows: 128, gramMethod: "dense" }' },
);

const checkedOptions = (options: SurrogateOptions = {}) => parseOptions(surrogateOptionsSchema, options, { error: ModelInputError });

/** A chain model's surrogate (synchronous, with the fast plan-based Gram paths); any other model: loadSurrogate. */
export class Surrogate implements SurrogateModel {
  readonly classes: number;
  readonly inputSize: number;
  readonly inputShape: readonly number[];
  readonly differentiable = true;
  private readonly plan: ModelPlan;
  private readonly method: GramMethod;
  private readonly gramChunkRows: number;

  constructor(
    readonly model: LayersModel,
    options: SurrogateOptions = {},
  ) {
    const { gramMethod, gramChunkRows } = checkedOptions(options);
    this.plan = planOf(model);
    this.classes = this.plan.classes;
    this.inputSize = this.plan.inputShape.reduce((a, b) => a * b, 1);
    this.inputShape = this.plan.inputShape;
    this.method = gramMethod ?? (supportsDenseGram(this.plan) ? 'dense' : 'autodiff');
    this.gramChunkRows = gramChunkRows;
  }

  /** A seeded, randomly initialised, untrained surrogate. */
  static random(spec: ModelSpec, options?: SurrogateOptions): Surrogate {
    checkedOptions(options);
    return new Surrogate(createModel(spec), options);
  }

  /** A surrogate loaded from a model directory (see io.ts). */
  static async load(dir: string, options?: SurrogateOptions): Promise<Surrogate> {
    // A mistake in the options is found before the model is read.
    checkedOptions(options);
    return new Surrogate(await loadModel(dir), options);
  }

  /** The surrogate's softmax, B×K. */
  probs(inputs: Float32Array, rows: number): ProbBatch {
    return { rows, cols: this.classes, data: predictProbs(this.model, inputs, rows) };
  }

  /** B×K×K Gram matrices M = G Gᵀ (row-major, one K×K block per input). */
  gram(inputs: Float32Array, rows: number): Float64Array {
    const width = checkInputs(this.model, inputs, rows);
    const k2 = this.classes * this.classes;
    const out = new Float64Array(rows * k2);
    for (let start = 0; start < rows; start += this.gramChunkRows) {
      const n = Math.min(this.gramChunkRows, rows - start);
      const block = withCpuFallback('the surrogate’s Gram matrices', () =>
        tf.tidy(() => gramTensor(this.plan, tf.tensor2d(inputs.subarray(start * width, (start + n) * width), [n, width]), this.method).dataSync()),
      );
      out.set(block, start * k2);
    }
    return out;
  }

  /** SurrogateModel: the same numbers as probs(); the work runs synchronously (chain models are small). */
  async probsAsync(inputs: Float32Array, rows: number): Promise<ProbBatch> {
    return this.probs(inputs, rows);
  }

  /** SurrogateModel: the same numbers as gram(). */
  async gramAsync(inputs: Float32Array, rows: number): Promise<Float64Array> {
    return this.gram(inputs, rows);
  }

  dispose(): void {
    this.model.dispose();
  }
}
