/** Keep the k largest probabilities, zero the rest; optionally renormalise the kept ones. */
import { defineDefense } from './spec/definition.js';

export const topk = defineDefense({
  name: 'topk',
  summary: 'keep the k largest probabilities and zero the rest',
  params: {
    k: { type: 'integer', min: 1, default: 1, description: 'how many classes keep their probability' },
    renormalize: { type: 'boolean', default: false, description: 'rescale the kept probabilities to sum to 1' },
  },
  create: ({ k, renormalize }) => ({
    needs: [],
    keepsTop1: true,
    onSimplex: renormalize,
    run({ rows, cols, data }, out) {
      const keep = Math.min(k, cols);
      const order = new Int32Array(cols);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        for (let c = 0; c < cols; c++) order[c] = c;
        // Partial selection sort: k is small in practice, and ties keep the lower index first.
        for (let i = 0; i < keep; i++) {
          let best = i;
          for (let j = i + 1; j < cols; j++) {
            const a = data[o + order[j]];
            const b = data[o + order[best]];
            if (a > b || (a === b && order[j] < order[best])) best = j;
          }
          const t = order[i];
          order[i] = order[best];
          order[best] = t;
        }
        let kept = 0;
        for (let c = 0; c < cols; c++) out[o + c] = 0;
        for (let i = 0; i < keep; i++) kept += data[o + order[i]];
        const scale = renormalize && kept > 0 ? 1 / kept : 1;
        for (let i = 0; i < keep; i++) out[o + order[i]] = data[o + order[i]] * scale;
        // A row whose kept mass is zero cannot be renormalised: keep the top-1 as a label.
        if (renormalize && kept <= 0) out[o + order[0]] = 1;
      }
    },
  }),
});
