/** Scores what an attacker trained on against the clean answers to the same queries (measurement only). */
import type { ProbBatch } from '../../defenses/index.js';
import type { AnswerQuality } from '../records/run-record.js';
import type { TruthOracle } from './types.js';

function compare(clean: ProbBatch, answers: ProbBatch): { l1: number; top1Changed: number } {
  const { rows, cols } = clean;
  let l1 = 0;
  let changed = 0;
  for (let r = 0; r < rows; r++) {
    let a = 0;
    let b = 0;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      l1 += Math.abs(clean.data[i] - answers.data[i]);
      if (clean.data[i] > clean.data[r * cols + a]) a = c;
      if (answers.data[i] > answers.data[r * cols + b]) b = c;
    }
    if (a !== b) changed++;
  }
  return { l1: rows ? l1 / rows : 0, top1Changed: rows ? changed / rows : 0 };
}

/** Mean L1 and top-1 change rate of the answers as received (`raw`) and as trained on (`used`). */
export function answerQuality(truth: TruthOracle | undefined, x: Float32Array, raw: ProbBatch, used: ProbBatch = raw): AnswerQuality | undefined {
  if (!truth || raw.rows === 0) return undefined;
  const clean = truth(x, raw.rows);
  if (clean.rows !== raw.rows || clean.cols !== raw.cols)
    throw new RangeError(`the clean answers are ${clean.rows}×${clean.cols}, the attacker's ${raw.rows}×${raw.cols}`);
  const before = compare(clean, raw);
  const after = used === raw ? before : compare(clean, used);
  return { rows: raw.rows, rawL1: before.l1, usedL1: after.l1, rawTop1Changed: before.top1Changed, usedTop1Changed: after.top1Changed };
}
