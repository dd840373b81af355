/**
 * The evaluation's measurements on plain arrays: accuracy, agreement, the defender's utility cost,
 * and answer normalisation. No tensors here.
 */
import { argmaxRows, utilityCost, type ProbBatch } from '../../defenses/index.js';
import type { DefenderOutcome } from './run-record.js';

/** Fraction of rows whose top-1 equals the label. */
export function accuracy(predicted: ArrayLike<number>, labels: ArrayLike<number>): number {
  if (predicted.length !== labels.length) throw new RangeError(`${predicted.length} predictions for ${labels.length} labels`);
  if (labels.length === 0) return 0;
  let hits = 0;
  for (let i = 0; i < labels.length; i++) if (predicted[i] === labels[i]) hits++;
  return hits / labels.length;
}

export function median(values: ArrayLike<number>): number {
  if (values.length === 0) return 0;
  const sorted = Float64Array.from(values).sort();
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i];
  return values.length ? sum / values.length : 0;
}

/** The defender's side: the defended answers on the test set against the undefended ones. */
export function defenderOutcome(undefended: ProbBatch, defended: ProbBatch, labels: ArrayLike<number>): DefenderOutcome {
  const { l1, top1Changed } = utilityCost(undefended, defended);
  const before = accuracy(argmaxRows(undefended), labels);
  const after = accuracy(argmaxRows(defended), labels);
  return { accuracy: after, accuracyLoss: before - after, l1Mean: mean(l1), l1Median: median(l1), top1ChangeRate: mean(top1Changed) };
}

/**
 * What the attacker trains on: each answer as a distribution. Rows that do not sum to 1 (top-k
 * without renormalisation) are rescaled; a row of zeros becomes uniform.
 */
export function normaliseAnswers(batch: ProbBatch): ProbBatch {
  const { rows, cols, data } = batch;
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += Math.max(0, data[r * cols + c]);
    for (let c = 0; c < cols; c++) out[r * cols + c] = sum > 0 ? Math.max(0, data[r * cols + c]) / sum : 1 / cols;
  }
  return { rows, cols, data: out };
}
