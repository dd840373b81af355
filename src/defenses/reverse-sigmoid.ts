/**
 * Reverse sigmoid (Lee et al., 2019): ỹ = normalise(clip(y − β(σ(γ·σ⁻¹(y)) − ½), 0, 1)).
 * For a valid probability row some entry always survives the clip (entries ≤ ½ are only ever
 * raised), yet published implementations return NaN when a row sums to zero after clipping; here
 * such a row would become uniform (no information), never NaN.
 */
import { defineDefense } from './spec/definition.js';

const CLIP = 1e-9;

export const reverseSigmoid = defineDefense({
  name: 'reverse-sigmoid',
  summary: 'subtract a scaled sigmoid of the logit from each probability, clip and renormalise',
  params: {
    beta: { type: 'number', min: 0, exclusiveMin: true, default: 0.7, description: 'strength β of the perturbation' },
    gamma: { type: 'number', min: 0, exclusiveMin: true, default: 0.2, description: 'steepness γ of the sigmoid' },
  },
  create: ({ beta, gamma }) => ({
    needs: [],
    keepsTop1: false,
    onSimplex: true,
    run({ rows, cols, data }, out) {
      const row = new Float64Array(cols);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        let sum = 0;
        for (let c = 0; c < cols; c++) {
          const y = data[o + c];
          const clipped = Math.min(1 - CLIP, Math.max(CLIP, y));
          const inverse = Math.log(clipped / (1 - clipped));
          const perturbation = beta * (1 / (1 + Math.exp(-gamma * inverse)) - 0.5);
          row[c] = Math.min(1, Math.max(0, y - perturbation));
          sum += row[c];
        }
        if (sum > 0) for (let c = 0; c < cols; c++) out[o + c] = row[c] / sum;
        else out.fill(1 / cols, o, o + cols);
      }
    },
  }),
});
