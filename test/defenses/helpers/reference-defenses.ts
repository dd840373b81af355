/**
 * The MAD and rounding stages as they were before the many-class speed-ups, frozen so that
 * property tests can check the fast versions give the same answers. Inputs are validated rows
 * (what a stage receives): run them through toProbabilities first.
 */
import { argmaxAt, checkCompanion, enforceTop1, type DistanceNorm } from '../../../src/defenses/math/simplex.js';
import type { DefenseContext, ProbBatch } from '../../../src/defenses/index.js';
import { GradientGeometry } from './reference-mad-geometry.js';
import { lineSearch, MadOracle, type OracleKind } from './reference-mad-oracle.js';

export interface ReferenceMadParams {
  eps: number;
  norm: DistanceNorm;
  oracle: OracleKind;
  jacobian?: 'last-layer' | 'full';
}

/** The loop of src/defenses/mad/mad.ts's run(), unchanged. */
export function referenceMad(input: ProbBatch, ctx: DefenseContext, { eps, norm, oracle, jacobian = 'last-layer' }: ReferenceMadParams): Float32Array {
  const { rows, cols, data } = input;
  const out = new Float32Array(data.length);
  const full = jacobian === 'full';
  const surrogate = full ? undefined : checkCompanion(ctx.surrogateProbs!, input, 'surrogate probabilities').data;
  const gram = full ? ctx.gram! : undefined;
  const geometry = new GradientGeometry(cols);
  const solver = new MadOracle(cols);
  const target = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    if (gram) geometry.setGram(gram, r * cols * cols, data, o);
    else geometry.setLastLayer(surrogate!, o, data, o);
    const top1 = argmaxAt(data, o, cols);
    solver.solve(oracle, geometry, data, o, top1, target);
    const alpha = lineSearch(norm, eps, data, o, target);
    for (let c = 0; c < cols; c++) out[o + c] = (1 - alpha) * data[o + c] + alpha * target[c];
    if (oracle === 'argmax') enforceTop1(out, o, cols, top1);
  }
  return out;
}

/** The loop of src/defenses/rounding.ts's run(): a comparator sort of every class per row. */
export function referenceRounding({ rows, cols, data }: ProbBatch, decimals: number): Float32Array {
  const out = new Float32Array(data.length);
  const units = 10 ** decimals;
  const floors = new Float64Array(cols);
  const remainders = new Float64Array(cols);
  const order = new Int32Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let assigned = 0;
    for (let c = 0; c < cols; c++) {
      const scaled = data[o + c] * units;
      floors[c] = Math.floor(scaled);
      remainders[c] = scaled - floors[c];
      assigned += floors[c];
      order[c] = c;
    }
    const missing = Math.round(units - assigned);
    if (missing > 0) {
      order.sort((a, b) => remainders[b] - remainders[a] || data[o + b] - data[o + a] || a - b);
      for (let i = 0; i < missing && i < cols; i++) floors[order[i]] += 1;
    }
    for (let c = 0; c < cols; c++) out[o + c] = floors[c] / units;
  }
  return out;
}
