/**
 * MAD, prediction poisoning (Orekondy, Schiele, Fritz, ICLR 2020): per row, an oracle picks the
 * target y* whose training gradient points farthest from the one y gives, then the answer moves
 * from y toward y* as far as the budget ε allows: ỹ = (1−α)·y + α·y*.
 *
 * The gradient geometry comes from the surrogate: its softmax (last-layer closed form) or
 * per-row K×K Gram matrices over all its parameters (jacobian=full).
 */
import { gradientInputs } from './gradient-inputs.js';
import { defineDefense } from '../spec/definition.js';
import { DefenseSpecError } from '../errors.js';
import { GradientGeometry } from './mad-geometry.js';
import { lineSearch, MadOracle, type OracleKind } from './mad-oracle.js';
import { argmaxAt, enforceTop1, type DistanceNorm } from '../math/simplex.js';

export const mad = defineDefense({
  name: 'mad',
  summary: 'prediction poisoning: move each answer, within a budget, toward the target that most misdirects the attacker’s gradient',
  aliases: { 'mad-argmax': { oracle: 'argmax' } },
  params: {
    eps: { type: 'number', min: 0, exclusiveMin: true, default: 0.5, description: 'perturbation budget ε in the chosen norm' },
    norm: { type: 'enum', values: ['l1', 'l2', 'kl'], default: 'l1', description: 'distance that the budget bounds' },
    oracle: { type: 'enum', values: ['extreme', 'argmax'], default: 'extreme', description: 'extreme: best one-hot target; argmax: keep the top-1 class' },
    jacobian: {
      type: 'enum',
      values: ['last-layer', 'full'],
      default: 'last-layer',
      description: 'gradients over the surrogate’s last layer (closed form) or all its parameters (Gram matrices)',
    },
  },
  check({ eps, norm }) {
    const limit = norm === 'l1' ? 2 : norm === 'l2' ? Math.SQRT2 : Infinity;
    if (eps > limit)
      throw new DefenseSpecError(`mad: eps=${eps} exceeds the largest possible ${norm} distance between two probability vectors (${limit.toFixed(4)})`);
  },
  create: ({ eps, norm, oracle, jacobian }) => {
    const distance = norm as DistanceNorm;
    const oracleKind = oracle as OracleKind;
    const full = jacobian === 'full';
    return {
      needs: [full ? 'surrogateGram' : 'surrogate'],
      keepsTop1: oracleKind === 'argmax',
      onSimplex: true,
      run(input, out, ctx) {
        const { rows, cols, data } = input;
        const { gram, surrogate } = gradientInputs('mad', full, input, ctx);
        const geometry = new GradientGeometry(cols);
        const solver = new MadOracle(cols);
        const target = new Float64Array(cols);
        const support = new Int32Array(cols);
        for (let r = 0; r < rows; r++) {
          const o = r * cols;
          if (gram) geometry.setGram(gram, r * cols * cols, data, o);
          else geometry.setLastLayer(surrogate!, o, data, o);
          const top1 = argmaxAt(data, o, cols);
          solver.solve(oracleKind, geometry, data, o, top1, target);
          const alpha = lineSearch(distance, eps, data, o, target, support);
          for (let c = 0; c < cols; c++) out[o + c] = (1 - alpha) * data[o + c] + alpha * target[c];
          if (oracleKind === 'argmax') enforceTop1(out, o, cols, top1);
        }
      },
    };
  },
});
