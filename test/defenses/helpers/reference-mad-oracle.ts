/** Frozen copy of src/defenses/mad/mad-oracle.ts before the fast argmax search (Gray-code, quadratic greedy and 16-step KL bisection): the reference the property tests compare against. */
/**
 * MAD's oracle: the target y* on the simplex that maximises the angular deviation
 * H(y*) = 2·(1 − cos∠(Gᵀy*, Gᵀy)), i.e. minimises the cosine.
 *
 * - extreme: the best of the K one-hot vectors.
 * - argmax (keeps the top-1 class t): uniform distributions over subsets S ∋ t with a tiny extra
 *   weight on t; all 2^(K−1) subsets for K ≤ 12 (Gray code, one class toggled per step), a greedy
 *   growth of S from {t} above that, keeping the best candidate seen.
 *
 * For a candidate with weights w = 1_S + δ·e_t: cos = wᵀMy / √(wᵀMw · yᵀMy), and the quantities
 * are updated incrementally as classes enter or leave S (see SubsetState).
 */
import { TOP1_WEIGHT, type GradientGeometry } from './reference-mad-geometry.js';
import type { DistanceNorm } from '../../../src/defenses/math/simplex.js';

/** Largest K searched exhaustively by the argmax oracle. */
export const EXHAUSTIVE_MAX_K = 12;

export type OracleKind = 'extreme' | 'argmax';

/** Scratch buffers of one oracle, reused across rows so the hot loop allocates nothing. */
export class MadOracle {
  private readonly inSet: Uint8Array;
  private readonly order: Int32Array;
  private readonly others: Int32Array;

  constructor(readonly k: number) {
    this.inSet = new Uint8Array(k);
    this.order = new Int32Array(k);
    this.others = new Int32Array(Math.max(0, k - 1));
  }

  /** Writes y* for the row into `target` (length K). `y` is the row being answered. */
  solve(kind: OracleKind, geometry: GradientGeometry, y: ArrayLike<number>, yOffset: number, top1: number, target: Float64Array): void {
    const degenerate = !(geometry.yMy > 1e-14 * maxOf(geometry.diag));
    if (kind === 'extreme') {
      const k = degenerate ? farthestOneHot(y, yOffset, this.k) : this.bestOneHot(geometry);
      target.fill(0);
      target[k] = 1;
      return;
    }
    if (degenerate) this.farthestSubset(y, yOffset, top1, target);
    else if (this.k <= EXHAUSTIVE_MAX_K) this.exhaustive(geometry, top1, target);
    else this.greedy(geometry, top1, target);
  }

  private bestOneHot(g: GradientGeometry): number {
    let best = -1;
    let bestScore = Infinity;
    for (let k = 0; k < this.k; k++) {
      const norm2 = g.diag[k] * g.yMy;
      if (!(norm2 > 0)) continue;
      const cos = g.my[k] / Math.sqrt(norm2);
      if (cos < bestScore) {
        bestScore = cos;
        best = k;
      }
    }
    return best < 0 ? 0 : best;
  }

  /** Every subset S ∋ t, visited in Gray-code order so that each step toggles one class. */
  private exhaustive(g: GradientGeometry, t: number, target: Float64Array): void {
    const { k, others } = this;
    const state = g.subsets();
    let n = 0;
    for (let i = 0; i < k; i++) if (i !== t) others[n++] = i;
    state.start(t);
    let bestScore = state.score();
    let bestMask = 0;
    let mask = 0;
    const count = 1 << n;
    for (let gray = 1; gray < count; gray++) {
      const bit = 31 - Math.clz32(gray & -gray);
      mask ^= 1 << bit;
      if (mask & (1 << bit)) state.add(others[bit]);
      else state.remove(others[bit]);
      const score = state.score();
      if (score < bestScore) {
        bestScore = score;
        bestMask = mask;
      }
    }
    target.fill(0);
    target[t] = 1;
    for (let b = 0; b < n; b++) if (bestMask & (1 << b)) target[others[b]] = 1;
    normaliseWithTop1(target, t);
  }

  /** Grow S from {t}, each step adding the class that minimises the cosine; keep the best S seen. */
  private greedy(g: GradientGeometry, t: number, target: Float64Array): void {
    const { k, inSet, order } = this;
    const state = g.subsets();
    inSet.fill(0);
    inSet[t] = 1;
    order[0] = t;
    state.start(t);
    let bestScore = state.score();
    let bestSize = 1;
    for (let size = 1; size < k; size++) {
      let pick = -1;
      let pickScore = Infinity;
      for (let j = 0; j < k; j++) {
        if (inSet[j]) continue;
        const score = state.scoreWith(j);
        if (pick < 0 || score < pickScore) {
          pick = j;
          pickScore = score;
        }
      }
      state.add(pick);
      inSet[pick] = 1;
      order[size] = pick;
      if (pickScore < bestScore) {
        bestScore = pickScore;
        bestSize = size + 1;
      }
    }
    target.fill(0);
    for (let i = 0; i < bestSize; i++) target[order[i]] = 1;
    normaliseWithTop1(target, t);
  }

  /**
   * Degenerate case (Gᵀy = 0, e.g. surrogate p = y): the angle is undefined, so take the
   * top-1-keeping candidate farthest from y in L1: t plus the n − 1 least likely classes, best n.
   */
  private farthestSubset(y: ArrayLike<number>, yOffset: number, t: number, target: Float64Array): void {
    const { k, order } = this;
    let n = 0;
    for (let i = 0; i < k; i++) if (i !== t) order[n++] = i;
    const ascending = Array.from(order.subarray(0, n)).sort((a, b) => y[yOffset + a] - y[yOffset + b] || a - b);
    let bestSize = 1;
    let bestDistance = -1;
    for (let size = 1; size <= k; size++) {
      let distance = Math.abs(y[yOffset + t] - 1 / size);
      for (let r = 0; r < ascending.length; r++) {
        const share = r < size - 1 ? 1 / size : 0;
        distance += Math.abs(y[yOffset + ascending[r]] - share);
      }
      if (distance > bestDistance) {
        bestDistance = distance;
        bestSize = size;
      }
    }
    target.fill(0);
    target[t] = 1;
    for (let r = 0; r < bestSize - 1; r++) target[ascending[r]] = 1;
    normaliseWithTop1(target, t);
  }
}

/** The one-hot vector farthest from y in every norm: the least likely class. */
function farthestOneHot(y: ArrayLike<number>, yOffset: number, k: number): number {
  let best = 0;
  for (let i = 1; i < k; i++) if (y[yOffset + i] < y[yOffset + best]) best = i;
  return best;
}

function normaliseWithTop1(weights: Float64Array, t: number): void {
  weights[t] += TOP1_WEIGHT;
  let sum = 0;
  for (let i = 0; i < weights.length; i++) sum += weights[i];
  for (let i = 0; i < weights.length; i++) weights[i] /= sum;
}

function maxOf(values: Float64Array): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
  return max;
}

/** Largest α ∈ [0, 1] with dist(y, (1−α)y + αy*) ≤ ε. */
export function lineSearch(norm: DistanceNorm, eps: number, y: ArrayLike<number>, yOffset: number, target: Float64Array): number {
  const k = target.length;
  if (norm === 'l1' || norm === 'l2') {
    let acc = 0;
    for (let i = 0; i < k; i++) {
      const d = Math.abs(y[yOffset + i] - target[i]);
      acc += norm === 'l1' ? d : d * d;
    }
    const distance = norm === 'l1' ? acc : Math.sqrt(acc);
    return distance > 0 ? Math.min(1, eps / distance) : 1;
  }
  const klAt = (alpha: number): number => {
    let kl = 0;
    for (let i = 0; i < k; i++) {
      const p = y[yOffset + i];
      if (p <= 0) continue;
      const q = (1 - alpha) * p + alpha * target[i];
      if (q <= 0) return Infinity;
      kl += p * Math.log(p / q);
    }
    return kl;
  };
  if (klAt(1) <= eps) return 1;
  let lo = 0;
  let hi = 1;
  for (let step = 0; step < 15; step++) {
    const mid = 0.5 * (lo + hi);
    if (klAt(mid) <= eps) lo = mid;
    else hi = mid;
  }
  return lo;
}
