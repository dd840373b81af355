/**
 * The networks this project trains: an MLP (784-256-128-K by default) and a LeNet-style CNN.
 * Both end in a linear layer producing logits (plan/predict.ts turns them into probabilities), and both
 * are initialised from a seed, so a "random surrogate" is the same network on every run.
 */
import { z } from 'zod';
import { integerAtLeast, numberIn, parseOptions, positiveInteger } from '../../validation/index.js';
import { ModelInputError } from '../errors.js';
import { namedChoice } from '../option-fields.js';
import { tf, type LayersModel } from './tf.js';

/**
 * mlp: 784-256-128-K. lenet: LeNet-5 widths (6/16 channels, dense 120-84). cnn: the knockoff CNN of the
 * calibration (two 5×5 convolutions of 32 and 64 channels, 2×2 pooling, dense 256).
 */
export type Architecture = 'mlp' | 'lenet' | 'cnn';
export const ARCHITECTURES: readonly Architecture[] = ['mlp', 'lenet', 'cnn'];

export interface ModelSpec {
  arch: Architecture;
  /** Shape of one input without the batch axis, e.g. [28, 28, 1] or [784]. */
  inputShape: readonly number[];
  classes: number;
  seed: number;
  /** Hidden layer widths: MLP default [256, 128]; LeNet's dense part default [120, 84]. */
  hidden?: readonly number[];
  /** LeNet convolution channels, default [6, 16] (5×5 kernels, each followed by 2×2 max pooling). */
  filters?: readonly [number, number];
}

export function createModel(spec: ModelSpec): LayersModel {
  validate(spec);
  let layerSeed = spec.seed >>> 0;
  // One seed per layer so that changing one layer's width does not reshuffle the others.
  const init = () => tf.initializers.glorotUniform({ seed: layerSeed++ });
  const model = tf.sequential();
  if (spec.arch === 'mlp') {
    // Flatten needs an input of rank ≥ 2; a flat input goes straight to the first dense layer.
    const flat = spec.inputShape.length === 1;
    if (!flat) model.add(tf.layers.flatten({ inputShape: [...spec.inputShape] }));
    let first = flat;
    for (const units of spec.hidden ?? [256, 128]) {
      model.add(tf.layers.dense({ ...(first ? { inputShape: [...spec.inputShape] } : {}), units, activation: 'relu', kernelInitializer: init() }));
      first = false;
    }
  } else {
    const [c1, c2] = spec.filters ?? (spec.arch === 'cnn' ? [32, 64] : [6, 16]);
    const shape = spec.inputShape.length === 1 ? squareImage(spec.inputShape[0]) : [...spec.inputShape];
    if (shape.length !== 3) throw new ModelInputError(`lenet needs an image input [height, width, channels], got [${spec.inputShape.join(', ')}]`);
    if (!convolutionFits(shape))
      throw new ModelInputError(
        `${spec.arch} needs images of at least ${MIN_CONV_SIDE}×${MIN_CONV_SIDE}, got [${spec.inputShape.join(', ')}]; use arch "mlp" for smaller inputs`,
      );
    if (spec.inputShape.length === 1) model.add(tf.layers.reshape({ inputShape: [...spec.inputShape], targetShape: shape }));
    const first = spec.inputShape.length === 1 ? {} : { inputShape: shape };
    model.add(tf.layers.conv2d({ ...first, filters: c1, kernelSize: 5, padding: 'same', activation: 'relu', kernelInitializer: init() }));
    model.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
    model.add(tf.layers.conv2d({ filters: c2, kernelSize: 5, padding: 'valid', activation: 'relu', kernelInitializer: init() }));
    model.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
    model.add(tf.layers.flatten());
    for (const units of spec.hidden ?? (spec.arch === 'cnn' ? [256] : [120, 84])) {
      model.add(tf.layers.dense({ units, activation: 'relu', kernelInitializer: init() }));
    }
  }
  const noHidden = spec.arch === 'mlp' && spec.inputShape.length === 1 && (spec.hidden ?? [256, 128]).length === 0;
  model.add(
    tf.layers.dense({ ...(noHidden ? { inputShape: [...spec.inputShape] } : {}), units: spec.classes, activation: 'linear', kernelInitializer: init() }),
  );
  return model;
}

/** The smallest side the convolutional architectures take: 5×5 same conv, pool, 5×5 valid conv, pool. */
export const MIN_CONV_SIDE = 12;

/** Whether `inputShape` (an image [H, W, C], or a flat square image) is large enough for lenet/cnn. */
export function convolutionFits(inputShape: readonly number[]): boolean {
  let shape = inputShape;
  if (shape.length === 1) {
    const side = Math.round(Math.sqrt(shape[0]));
    if (side * side !== shape[0]) return false;
    shape = [side, side, 1];
  }
  return shape.length === 3 && shape[0] >= MIN_CONV_SIDE && shape[1] >= MIN_CONV_SIDE;
}

/** `arch`, or "mlp" when a convolutional `arch` does not fit `inputShape` (tiny or non-image inputs). */
export function fittingArchitecture(arch: Architecture, inputShape: readonly number[]): Architecture {
  return arch === 'mlp' || convolutionFits(inputShape) ? arch : 'mlp';
}

function squareImage(size: number): number[] {
  const side = Math.round(Math.sqrt(size));
  if (side * side !== size) throw new ModelInputError(`lenet needs a square image; ${size} values are not one`);
  return [side, side, 1];
}

const layerWidth = positiveInteger('a positive integer (a layer width)');

const modelSpecSchema = z.strictObject(
  {
    arch: namedChoice(ARCHITECTURES),
    inputShape: z
      .array(positiveInteger(), { error: 'a list of positive integers, e.g. [28, 28, 1] or [784]' })
      .min(1, { error: 'a non-empty list of positive integers, e.g. [28, 28, 1] or [784]' }),
    classes: integerAtLeast(2),
    seed: numberIn({ integer: true }),
    hidden: z.array(layerWidth, { error: 'a list of layer widths, e.g. [256, 128]' }).optional(),
    filters: z.tuple([layerWidth, layerWidth], { error: 'two channel counts, e.g. [6, 16]' }).optional(),
  } satisfies Record<keyof ModelSpec, z.ZodType>,
  { error: 'an object, e.g. { arch: "mlp", inputShape: [784], classes: 10, seed: 1 }' },
);

function validate(spec: ModelSpec): void {
  parseOptions(modelSpecSchema, spec, { error: ModelInputError });
}

/** Values per input row (the product of the model's input shape without the batch axis). */
export function inputSize(model: LayersModel): number {
  const shape = model.inputs[0].shape;
  return shape.slice(1).reduce<number>((a, b) => a * (b ?? 1), 1);
}

/** Number of classes (the width of the last layer). */
export function classCount(model: LayersModel): number {
  const shape = model.outputs[0].shape;
  const classes = shape[shape.length - 1];
  if (typeof classes !== 'number') throw new ModelInputError('the model’s output has no fixed width');
  return classes;
}
