/**
 * The top-1 attacker: the knockoff trained on the argmax of the answers, not on the answers
 * themselves (the `argmax` entry of `attackerLabels`; every family trains it beside the soft one on
 * the same transfer set, so it costs no query). Any defense that keeps the top-1 class (argmax,
 * MAD-argmax, ModelGuard-W/S, top-k, and MAD or reverse sigmoid at settings that change no label)
 * hands this attacker exactly the undefended labels: against it, such a defense is worth what
 * `argmax` alone is worth, by construction. The MAD paper reports this attacker as the strong one
 * against prediction poisoning.
 */
import type { ProbBatch } from '../../defenses/index.js';
import type { AttackerLabels } from '../config.js';

/** The top-1 class of every row (first maximum). */
export function top1Labels(answers: ProbBatch): Int32Array {
  const { rows, cols, data } = answers;
  const top = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (data[r * cols + c] > data[r * cols + best]) best = c;
    top[r] = best;
  }
  return top;
}

/** What a knockoff trains on: the (normalised) answers, or their top-1 labels. */
export function trainingTargets(
  x: Float32Array,
  answers: ProbBatch,
  labels: AttackerLabels,
): { x: Float32Array; rows: number; targets?: Float32Array; labels?: Int32Array } {
  if (labels === 'soft') return { x, rows: answers.rows, targets: answers.data };
  return { x, rows: answers.rows, labels: top1Labels(answers) };
}
