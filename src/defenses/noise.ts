/**
 * Random perturbation of the log-probabilities, softmax back. Deterministic per input: the noise
 * is drawn from a generator keyed by the row's input key (or, without one, by the row itself:
 * the model is deterministic, so the same input gives the same row).
 */
import { defineDefense } from './spec/definition.js';
import { ephemeralSecret, KeyedRandom } from './math/keyed-random.js';

export const noise = defineDefense({
  name: 'noise',
  summary: 'add seeded Gaussian or Laplace noise to the log-probabilities (same input, same answer)',
  params: {
    scale: { type: 'number', min: 0, default: 0.5, description: 'standard deviation (gaussian) or scale (laplace) of the noise on log-probabilities' },
    dist: { type: 'enum', values: ['gaussian', 'laplace'], default: 'gaussian', description: 'noise distribution' },
  },
  create: ({ scale, dist }, options) => {
    const secret = options.noiseSecret ?? ephemeralSecret();
    return {
      needs: ['inputKey'],
      keepsTop1: false,
      onSimplex: true,
      run({ rows, cols, data }, out, ctx) {
        const logits = new Float64Array(cols);
        for (let r = 0; r < rows; r++) {
          const o = r * cols;
          const key = ctx.inputKeys?.[r] ?? new Uint8Array(data.buffer, data.byteOffset + o * 4, cols * 4);
          const random = new KeyedRandom(secret, key);
          let max = -Infinity;
          for (let c = 0; c < cols; c++) {
            const sample = dist === 'gaussian' ? random.gaussian() : random.laplace();
            // log 0 = -Infinity stays -Infinity: a class with no mass gets none back.
            logits[c] = Math.log(data[o + c]) + scale * sample;
            if (logits[c] > max) max = logits[c];
          }
          let sum = 0;
          for (let c = 0; c < cols; c++) {
            logits[c] = Math.exp(logits[c] - max);
            sum += logits[c];
          }
          for (let c = 0; c < cols; c++) out[o + c] = logits[c] / sum;
        }
      },
    };
  },
});
