/**
 * What every attacker family shares: the options a run gives it, the transfer set it builds, and
 * what it reports back. Families: knockoff (random, adaptive policies), top-1 (a label variant of
 * any family), smoothing, restorer, inversion, and the Jacobian-based jbda / jbself / jbtop3
 * (with restorer-jbtop3 in front of JB-top3).
 */
import type { ProbBatch } from '../../defenses/index.js';
import type { AdaptiveSettings, AttackerLabels, PolicyName, TrainingSettings } from '../config.js';
import type { InferenceClient } from '../endpoint/kserve-client.js';
import type { AttackerPool } from '../policies/types.js';
import type { AnswerQuality, AttackerOutcome, RestorerReport } from '../records/run-record.js';

/** The victim's test set, with the undefended victim's top-1 for the agreement score. */
export interface VictimTestSet {
  x: Float32Array;
  rows: number;
  labels: ArrayLike<number>;
  victimTop1: ArrayLike<number>;
}

/**
 * The undefended answers to any images, for measurement only (the evaluation owns the victim; no
 * attacker ever sees them): how far the answers an attacker trained on are from the clean ones.
 */
export type TruthOracle = (x: Float32Array, rows: number) => ProbBatch;

export interface AttackOptions {
  pool: AttackerPool;
  client: InferenceClient;
  policy: PolicyName;
  budget: number;
  requestRows: number;
  classes: number;
  inputShape: readonly number[];
  knockoff: TrainingSettings;
  adaptive: AdaptiveSettings;
  labels: readonly AttackerLabels[];
  test: VictimTestSet;
  seed: number;
  /** Called as queries are answered and as the knockoffs train. */
  onProgress?: (phase: 'query' | 'train', done: number, total: number) => void;
  /** Measurement only: the clean answers, to score what the attacker trained on. */
  truth?: TruthOracle;
}

export interface TransferSet {
  x: Float32Array;
  answers: ProbBatch;
  /** Pool index of each row. */
  indices: Int32Array;
}

export interface AttackResult {
  outcomes: AttackerOutcome[];
  transfer: TransferSet;
  queries: number;
  requests: number;
  /** Adaptive policy: images drawn per coarse class (how far the bandit narrowed the transfer set). */
  picks?: number[];
  /** With a truth oracle: the answers as received and as trained on, against the clean ones. */
  quality?: AnswerQuality;
  /** Restorer families: the restorer's own accuracy on held-out shadow queries. */
  restorer?: RestorerReport;
}
