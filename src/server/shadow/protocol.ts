/**
 * What crosses between the serving thread and the shadow's trainer thread. Arrays travel as
 * transferred buffers (moved, not copied twice); nothing here is ever logged.
 */
import type { ShadowArch } from './options.js';

export interface TrainerStart {
  arch: ShadowArch;
  /** Shape of one input as the knockoff takes it (before any layout change). */
  inputShape: number[];
  /** Image rows in channels-first order are turned to channels-last for the convolutional knockoffs. */
  layout?: 'nhwc' | 'nchw';
  classes: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  /** Share of one core the thread may use on average. */
  cpu: number;
  engine: 'auto' | 'tfjs' | 'onnxruntime';
  heldOut: { x: Float32Array; rows: number; labels: Int32Array; answersTop1?: Int32Array };
  /** Int32Array over a SharedArrayBuffer: the main thread sets [0] = 1 and notifies to cut a pause short (on close). */
  wake: Int32Array;
  /** Lower the thread's scheduling priority (nice 19) where the OS allows it. Default true. */
  lowPriority: boolean;
}

/** One tier's rows for a round: the training part and the held-back part. */
export interface RoundGroup {
  tier: string;
  rows: number;
  x: Float32Array;
  original: Float32Array;
  defended: Float32Array;
  back: { rows: number; x: Float32Array; originalTop1: Int32Array };
}

export interface Pair {
  defended: number;
  original: number;
}

export interface TierFigures {
  tier: string;
  rows: number;
  /** On the held-out labels. */
  accuracy: Pair;
  /** Agreement with the original answers' top-1 on the held-back rows (absent when there are none). */
  heldBack?: Pair;
  /** Agreement with the model's answers on the held-out set (when given). */
  heldOut?: Pair;
}

export type TrainerRequest = { type: 'round'; id: number; groups: RoundGroup[] };

export type TrainerReply =
  | { type: 'ready'; engine: string; priority?: number; threadId: number }
  | { type: 'failed'; message: string }
  /** CPU seconds worked since the last report (about once a second while training): the counter moves during a round, not only after it. */
  | { type: 'cpu'; seconds: number }
  | { type: 'result'; id: number; figures: TierFigures[]; busySeconds: number; pausedSeconds: number }
  | { type: 'error'; id: number; message: string; busySeconds: number };
