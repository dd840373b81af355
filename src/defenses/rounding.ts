/**
 * Round each probability to `decimals` places. Largest-remainder rounding keeps the row on the
 * simplex: every entry is its value rounded down or up by one unit of the last place, and the
 * units sum exactly to 10^decimals.
 *
 * The missing units go to the entries first in the order (remainder desc, probability desc,
 * index asc). Only the set of receivers matters, not their order, so a selection finds the
 * threshold remainder in O(K) instead of sorting the row; just the entries tied at the threshold
 * are ordered by the tie-breaks.
 */
import { defineDefense } from './spec/definition.js';
import { RadixOrder } from './math/radix-order.js';

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
      const scratch = new Float64Array(cols);
      const tied = new Int32Array(cols);
      const sorter = new RadixOrder(cols);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        let assigned = 0;
        for (let c = 0; c < cols; c++) {
          const scaled = data[o + c] * units;
          floors[c] = Math.floor(scaled);
          remainders[c] = scaled - floors[c];
          assigned += floors[c];
        }
        const missing = Math.min(Math.round(units - assigned), cols);
        if (missing >= cols) {
          for (let c = 0; c < cols; c++) floors[c] += 1;
        } else if (missing > 0) {
          scratch.set(remainders);
          // The missing-th largest remainder: everything above it gets a unit.
          const threshold = selectRank(scratch, cols, cols - missing);
          let left = missing;
          let ties = 0;
          for (let c = 0; c < cols; c++) {
            if (remainders[c] > threshold) {
              floors[c] += 1;
              left--;
            } else if (remainders[c] === threshold) {
              tied[ties++] = c;
            }
          }
          // Among equal remainders: larger probability first, then lower index (the sort is stable).
          if (left < ties) sorter.sort(tied, ties, data, o, true);
          for (let i = 0; i < left; i++) floors[tied[i]] += 1;
        }
        for (let c = 0; c < cols; c++) out[o + c] = floors[c] / units;
      }
    },
  }),
});

/**
 * The value of rank `rank` (0-based, ascending) among values[0, length), reordering values:
 * quickselect with three-way partitions (runs of equal values end it at once), falling back to a
 * full sort if the partitions keep coming out lopsided.
 */
export function selectRank(values: Float64Array, length: number, rank: number): number {
  let lo = 0;
  let hi = length - 1;
  let budget = 2 * Math.ceil(Math.log2(length + 1)) + 4;
  while (lo < hi) {
    if (budget-- === 0) {
      values.subarray(lo, hi + 1).sort();
      return values[rank];
    }
    const a = values[lo];
    const b = values[(lo + hi) >>> 1];
    const c = values[hi];
    const pivot = a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
    let lt = lo;
    let i = lo;
    let gt = hi;
    while (i <= gt) {
      const v = values[i];
      if (v < pivot) {
        values[i++] = values[lt];
        values[lt++] = v;
      } else if (v > pivot) {
        values[i] = values[gt];
        values[gt--] = v;
      } else {
        i++;
      }
    }
    if (rank < lt) hi = lt - 1;
    else if (rank > gt) lo = gt + 1;
    else return pivot;
  }
  return values[rank];
}
