/** Label only: the one-hot vector of the top-1 class. */
import { defineDefense } from './spec/definition.js';
import { argmaxAt } from './math/simplex.js';

export const argmax = defineDefense({
  name: 'argmax',
  summary: 'return the one-hot vector of the top-1 class (label only)',
  params: {},
  create: () => ({
    needs: [],
    keepsTop1: true,
    onSimplex: true,
    run({ rows, cols, data }, out) {
      out.fill(0);
      for (let r = 0; r < rows; r++) out[r * cols + argmaxAt(data, r * cols, cols)] = 1;
    },
  }),
});
