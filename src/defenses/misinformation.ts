/**
 * Adaptive misinformation (Kariyappa & Qureshi, 2020): α = σ(ν(τ − max y)),
 * ỹ = (1 − α)·y + α·softmax(F_mis(x)). Confident (in-distribution) answers pass nearly unchanged.
 */
import { defineDefense } from './spec/definition.js';
import { MissingContextError } from './errors.js';
import { checkCompanion } from './math/simplex.js';

export const misinformation = defineDefense({
  name: 'misinformation',
  summary: 'blend in a misinformation model’s answer when the victim is not confident',
  aliases: { 'adaptive-misinformation': {} },
  params: {
    tau: { type: 'number', min: 0, max: 1, default: 0.9, description: 'confidence threshold τ on the top probability' },
    nu: { type: 'number', min: 0, exclusiveMin: true, default: 1000, description: 'steepness ν of the switch' },
  },
  create: ({ tau, nu }) => ({
    needs: ['misinformation'],
    keepsTop1: false,
    onSimplex: true,
    run(input, out, ctx) {
      if (!ctx.misinformationProbs) throw new MissingContextError('misinformation needs the misinformation model’s probabilities');
      const mis = checkCompanion(ctx.misinformationProbs, input, 'misinformation probabilities').data;
      const { rows, cols, data } = input;
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        let top = 0;
        for (let c = 0; c < cols; c++) if (data[o + c] > top) top = data[o + c];
        const alpha = 1 / (1 + Math.exp(-nu * (tau - top)));
        for (let c = 0; c < cols; c++) out[o + c] = (1 - alpha) * data[o + c] + alpha * mis[o + c];
      }
    },
  }),
});
