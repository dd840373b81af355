/**
 * Round each probability to `decimals` places. Largest-remainder rounding keeps the row on the
 * simplex: every entry is its value rounded down or up by one unit of the last place, and the
 * units sum exactly to 10^decimals.
 */
import { defineDefense } from './definition.js';

export const rounding = defineDefense({
  name: 'rounding',
  summary: 'round each probability to a number of decimal places (rows still sum to 1)',
  params: {
    decimals: { type: 'integer', min: 0, max: 6, default: 3, description: 'decimal places kept' },
  },
  create: ({ decimals }) => ({
    needs: [],
    keepsTop1: false,
    onSimplex: true,
    run({ rows, cols, data }, out) {
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
          // Largest remainders get the missing units; ties go to the larger probability, then the lower index.
          order.sort((a, b) => remainders[b] - remainders[a] || data[o + b] - data[o + a] || a - b);
          for (let i = 0; i < missing && i < cols; i++) floors[order[i]] += 1;
        }
        for (let c = 0; c < cols; c++) out[o + c] = floors[c] / units;
      }
    },
  }),
});
