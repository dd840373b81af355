/** What trainModel takes and returns, shared by its tfjs and onnxruntime loops; the schema of its options. */
import { z } from 'zod';
import { callable, fromText, integerAtLeast, numberIn, positiveInteger, positiveNumber, SENTENCE } from '../../validation/index.js';
import { namedChoice } from '../option-fields.js';

export type TrainLoss = 'soft-ce' | 'misinformation';
export const TRAIN_LOSSES: readonly TrainLoss[] = ['soft-ce', 'misinformation'];

/**
 * What runs the steps. 'onnxruntime': the optional onnxruntime-node package (native kernels, faster
 * than tfjs on CPU: docs/measurements/benchmarks.md, models-cnn; soft-label loss, ReLU/linear dense and stride-1
 * convolutions, non-overlapping max pooling). 'tfjs': the active tfjs backend. 'auto' (default):
 * onnxruntime when it is installed, the model and loss are covered and tfjs runs on wasm or cpu
 * (tfjs-node and GPUs keep their own kernels); tfjs otherwise.
 */
export type TrainEngine = 'auto' | 'tfjs' | 'onnxruntime';
export const TRAIN_ENGINES: readonly TrainEngine[] = ['auto', 'tfjs', 'onnxruntime'];

export interface TrainData {
  /** N rows of the model's input size, row-major. */
  readonly x: Float32Array;
  readonly rows: number;
  /** N×K soft labels (rows on the simplex): what a knockoff learns from. */
  readonly targets?: Float32Array;
  /** N hard labels in 0..K-1 (turned into one-hot targets). Give targets or labels. */
  readonly labels?: Uint8Array | Int32Array;
}

export interface TrainProgress {
  /** 1-based. */
  readonly epoch: number;
  readonly epochs: number;
  /** Batches done in this epoch, of `batches`. */
  readonly batch: number;
  readonly batches: number;
  /** Mean loss over this epoch so far. */
  readonly loss: number;
  /** Share of this epoch's rows whose top-1 matches the target's top-1. */
  readonly accuracy: number;
  /** Set on the last report of an epoch when validation data was given. */
  readonly validationAccuracy?: number;
  /** Whether this is the epoch's last report. */
  readonly epochDone: boolean;
}

export interface TrainOptions {
  epochs: number;
  /** Default 64. */
  batchSize?: number;
  /** Adam's step size, default 1e-3. */
  learningRate?: number;
  /** Seeds the shuffling, default 0. */
  seed?: number;
  /** Default 'soft-ce'. */
  loss?: TrainLoss;
  /** Scored after each epoch (top-1 accuracy). */
  validation?: { readonly x: Float32Array; readonly labels: ArrayLike<number>; readonly rows?: number };
  onProgress?: (progress: TrainProgress) => void;
  /** After each optimiser step (1-based, over all epochs) of `steps`; e.g. to keep checkpoints (HODA). */
  onStep?: (step: number, steps: number) => void;
  /** Minimum milliseconds between progress reports within an epoch (default 250). */
  progressIntervalMs?: number;
  /** Where to say that training falls back to cpu (default stderr). */
  log?: (line: string) => void;
  /** Default 'auto', or MSD_TRAIN_ENGINE when set. */
  engine?: TrainEngine;
  /** onnxruntime's threads per operator (default MSD_TRAIN_THREADS, else 1: evaluations run one job per core). */
  threads?: number;
}

/** TrainOptions, checked once per training (the data's shape is checked against the model beside it). */
export const trainOptionsSchema = z.strictObject(
  {
    epochs: integerAtLeast(1),
    batchSize: integerAtLeast(1).optional(),
    learningRate: positiveNumber().optional(),
    seed: numberIn({ integer: true }).optional(),
    loss: namedChoice(TRAIN_LOSSES).optional(),
    validation: z
      .looseObject(
        {
          x: z.instanceof(Float32Array, { error: 'a Float32Array of rows' }),
          labels: z.custom<ArrayLike<number>>((labels) => ArrayBuffer.isView(labels) || Array.isArray(labels), { error: 'an array of class indices' }),
          rows: positiveInteger().optional(),
        },
        { error: 'an object { x: Float32Array, labels, rows? }' },
      )
      .optional(),
    onProgress: callable<NonNullable<TrainOptions['onProgress']>>('a function (progress) => void').optional(),
    onStep: callable<NonNullable<TrainOptions['onStep']>>('a function (step, steps) => void').optional(),
    progressIntervalMs: numberIn({ min: 0 }, 'a number of ms ≥ 0').optional(),
    log: callable<NonNullable<TrainOptions['log']>>('a function (line) => void').optional(),
    engine: namedChoice(TRAIN_ENGINES).optional(),
    threads: integerAtLeast(1).optional(),
  } satisfies Record<keyof TrainOptions, z.ZodType>,
  { error: 'an object, e.g. { epochs: 10, batchSize: 64, learningRate: 0.001 }' },
);

/** MSD_TRAIN_THREADS, the default of TrainOptions.threads: a wrong value names the variable it came from. */
export const trainThreadsText = fromText(
  z.custom<number>((threads) => Number.isInteger(threads) && (threads as number) >= 1, {
    error: (issue) => `must be an integer ≥ 1, got MSD_TRAIN_THREADS="${String(issue.input)}"`,
    params: SENTENCE,
  }),
);
/** MSD_TRAIN_ENGINE, the default of TrainOptions.engine. */
export const trainEngineText = namedChoice(TRAIN_ENGINES);

export interface EpochRecord {
  readonly epoch: number;
  readonly loss: number;
  readonly accuracy: number;
  readonly validationAccuracy?: number;
  readonly seconds: number;
  readonly imagesPerSecond: number;
}

export interface TrainResult {
  readonly history: readonly EpochRecord[];
  /** Training images per second over all epochs (validation excluded). */
  readonly imagesPerSecond: number;
  /** What ran the steps: the tfjs backend, or "onnxruntime (N threads)". */
  readonly backend: string;
}
