/**
 * ModelGuard-S (Tang et al., USENIX Security 2024), the quantising variant: each answer is replaced
 * by a codeword within ε of it that keeps its top-1 class, and many answers share a codeword, so what
 * the answers tell even a Bayes-optimal attacker who knows the defense is bounded by the codebook
 * (a deterministic answer carries at most the entropy of the codeword it maps to).
 *
 * The authors' code grows a codebook per top-1 class from the queries it has answered ("ordered"
 * quantisation: the first stored centroid within ε, else the answer itself becomes a new centroid).
 * That makes an answer depend on every earlier query and on which worker served it. Here the
 * codebook is fixed, so the defense stays a pure function of the answer (the same input gets the
 * same answer in every process, with no secret to share), and the rule stays the authors': the
 * first codeword within ε, in a fixed order from coarse to fine:
 *   - resolutions N = 1, 2, 3, …, 8, 10, 12, 15, … (each step ×1.25 at most) up to 2²²: the codebook
 *     at N is the simplex points whose entries are multiples of 1/N (N = 1 is the bare label);
 *   - at each N the candidate is the nearest such point (largest-remainder rounding, as the rounding
 *     defense does), with up to 8 single units moved from the largest rival to the top class when
 *     rounding ties them; it is taken when the answer's top-1 class is its unique maximum and its
 *     distance to the answer is at most ε. If no resolution qualifies, the answer itself is returned,
 *     as the authors' code does when no centroid is close enough.
 * No key: the map is deterministic already, and a secret grid (a keyed dither) would not lower what a
 * deterministic answer carries while it would cost about one resolution step for the same ε.
 */
import { defineDefense } from '../spec/definition.js';
import { DefenseSpecError } from '../errors.js';
import { argmaxAt, enforceTop1 } from '../math/simplex.js';

/** Finest resolution tried; beyond it the answer is returned as it is. */
export const FINEST_RESOLUTION = 2 ** 22;

/** The resolutions tried, coarse to fine: every N up to 8, then steps of at most ×1.25. */
export const RESOLUTIONS: readonly number[] = (() => {
  const out: number[] = [];
  for (let n = 1; n <= FINEST_RESOLUTION; n = Math.max(n + 1, Math.floor(n * 1.25))) out.push(n);
  return out;
})();

export type QuantizerNorm = 'l1' | 'l2';

/** Units moved from rivals to the top class at one resolution before trying the next one. */
const MAX_TOP1_MOVES = 8;

/** The codebooks for rows of one width, with scratch reused across rows. */
export class Quantizer {
  private readonly units: Float64Array;
  private readonly fracs: Float64Array;
  private readonly order: Int32Array;
  private readonly y: Float64Array;

  constructor(readonly k: number) {
    this.units = new Float64Array(k);
    this.fracs = new Float64Array(k);
    this.order = new Int32Array(k);
    this.y = new Float64Array(k);
  }

  /**
   * Writes the codeword for row data[offset .. offset+k) into `out` and returns its resolution N,
   * or 0 when no codeword fits and the row itself (scaled to sum 1) is returned.
   */
  quantize(data: ArrayLike<number>, offset: number, eps: number, norm: QuantizerNorm, out: Float64Array): number {
    const { k, y } = this;
    let total = 0;
    for (let i = 0; i < k; i++) total += data[offset + i];
    for (let i = 0; i < k; i++) y[i] = data[offset + i] / total;
    const top1 = argmaxAt(y, 0, k);
    for (const n of RESOLUTIONS) {
      // Every codeword entry is a multiple of 1/N: the distance to the nearest such values bounds it from below.
      let bound = 0;
      for (let i = 0; i < k; i++) {
        const scaled = y[i] * n;
        const f = scaled - Math.floor(scaled);
        const gap = Math.min(f, 1 - f) / n;
        bound += norm === 'l1' ? gap : gap * gap;
      }
      if ((norm === 'l1' ? bound : Math.sqrt(bound)) > eps) continue;
      if (this.round(n, top1) && this.distance(n, norm) <= eps) {
        for (let i = 0; i < k; i++) out[i] = this.units[i] / n;
        return n;
      }
    }
    out.set(y);
    return 0;
  }

  /** Largest-remainder rounding of y to units of 1/N summing to N; false when t cannot be made the unique maximum. */
  private round(n: number, top1: number): boolean {
    const { k, y, units, fracs, order } = this;
    let sum = 0;
    for (let i = 0; i < k; i++) {
      const scaled = y[i] * n;
      units[i] = Math.floor(scaled);
      fracs[i] = scaled - units[i];
      sum += units[i];
      order[i] = i;
    }
    // Fewer than K units are missing; they go to the largest remainders (then the lower index).
    const missing = Math.min(k, Math.max(0, Math.round(n - sum)));
    if (missing > 0) {
      selectFirst(order, k, missing, (i, j) => fracs[i] > fracs[j] || (fracs[i] === fracs[j] && i < j));
      for (let s = 0; s < missing; s++) units[order[s]] += 1;
    }
    // Rounding can tie the top class with a close rival (or put the rival ahead): move single units
    // from the largest rival to t, a few at most, since each costs up to 2/N of distance.
    for (let moves = 0; ; moves++) {
      let rival = -1;
      for (let i = 0; i < k; i++) if (i !== top1 && (rival < 0 || units[i] > units[rival])) rival = i;
      if (rival < 0 || units[rival] < units[top1]) return true;
      if (moves === MAX_TOP1_MOVES || units[rival] === 0) return false;
      units[rival] -= 1;
      units[top1] += 1;
    }
  }

  private distance(n: number, norm: QuantizerNorm): number {
    const { k, y, units } = this;
    let acc = 0;
    for (let i = 0; i < k; i++) {
      const d = Math.abs(units[i] / n - y[i]);
      acc += norm === 'l1' ? d : d * d;
    }
    return norm === 'l1' ? acc : Math.sqrt(acc);
  }
}

/**
 * Rearranges order[0 .. m) so that its first `count` entries are the `count` first under the strict
 * total order `before` (in any order among themselves): quickselect, O(m) on average.
 */
function selectFirst(order: Int32Array, m: number, count: number, before: (i: number, j: number) => boolean): void {
  let lo = 0;
  let hi = m - 1;
  while (lo < hi && count > lo && count <= hi) {
    const pivot = order[(lo + hi) >> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (before(order[i], pivot)) i++;
      while (before(pivot, order[j])) j--;
      if (i <= j) {
        const swap = order[i];
        order[i] = order[j];
        order[j] = swap;
        i++;
        j--;
      }
    }
    // Now order[lo..j] ≤ pivot ≤ order[i..hi] and j < i; keep the side that holds the boundary.
    if (count <= j) hi = j;
    else if (count >= i) lo = i;
    else return;
  }
}

export const modelguardS = defineDefense({
  name: 'modelguard-s',
  summary: 'ModelGuard-S: quantise each answer to the coarsest codeword within ε that keeps the top-1 class (many answers share one)',
  params: {
    eps: { type: 'number', min: 0, exclusiveMin: true, default: 0.5, description: 'largest distance ε between an answer and its codeword' },
    norm: { type: 'enum', values: ['l1', 'l2'], default: 'l1', description: 'distance that ε bounds' },
  },
  check({ eps, norm }) {
    const limit = norm === 'l1' ? 2 : Math.SQRT2;
    if (eps > limit)
      throw new DefenseSpecError(
        `modelguard-s: eps=${eps} exceeds the largest possible ${norm} distance between two probability vectors (${limit.toFixed(4)})`,
      );
  },
  create: ({ eps, norm }) => {
    const quantizers = new Map<number, Quantizer>();
    return {
      needs: [],
      keepsTop1: true,
      onSimplex: true,
      run({ rows, cols, data }, out) {
        let quantizer = quantizers.get(cols);
        if (!quantizer) {
          quantizer = new Quantizer(cols);
          // A handful of widths per deployment; the cap only guards against unbounded growth.
          if (quantizers.size < 64) quantizers.set(cols, quantizer);
        }
        const row = new Float64Array(cols);
        for (let r = 0; r < rows; r++) {
          const o = r * cols;
          quantizer.quantize(data, o, eps, norm as QuantizerNorm, row);
          for (let c = 0; c < cols; c++) out[o + c] = row[c];
          // float32 rounding can tie entries 1/N apart near 1, or a near-tie of an answer returned as it is.
          enforceTop1(out, o, cols, argmaxAt(data, o, cols));
        }
      },
    };
  },
});
