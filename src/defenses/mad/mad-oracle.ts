/**
 * MAD's oracle: the target y* on the simplex that maximises the angular deviation
 * H(y*) = 2·(1 − cos∠(Gᵀy*, Gᵀy)), i.e. minimises the cosine.
 *
 * - extreme: the best of the K one-hot vectors.
 * - argmax (keeps the top-1 class t): uniform distributions over subsets S ∋ t with a tiny extra
 *   weight on t; all 2^(K−1) subsets for K ≤ 12 (Gray code, one class toggled per step), a greedy
 *   growth of S from {t} above that, keeping the best candidate seen. With the last-layer closed
 *   form the greedy step is a branch and bound over a tree of the classes (see mad-greedy.ts),
 *   which picks the same class as scoring them all; with Gram matrices every class is scored.
 *
 * For a candidate with weights w = 1_S + δ·e_t: cos = wᵀMy / √(wᵀMw · yᵀMy), and the quantities
 * are updated incrementally as classes enter or leave S (see SubsetState).
 */
import { LastLayerGreedy } from './mad-greedy.js';
import { lastLayerScore, TOP1_WEIGHT, type GradientGeometry, type SubsetState } from './mad-geometry.js';
import type { DistanceNorm } from '../math/simplex.js';
import { RadixOrder } from '../math/radix-order.js';

/** Largest K searched exhaustively by the argmax oracle. */
export const EXHAUSTIVE_MAX_K = 12;

/** Smallest K where the greedy's branch and bound beats scoring every class at every step. */
const TREE_MIN_K = 24;

export type OracleKind = 'extreme' | 'argmax';

/** Scratch buffers of one oracle, reused across rows so the hot loop allocates nothing. */
export class MadOracle {
  private readonly inSet: Uint8Array;
  private readonly order: Int32Array;
  private readonly others: Int32Array;
  private readonly distances: Float64Array;
  private readonly prefix: Float64Array;
  private lastLayerGreedy?: LastLayerGreedy;
  private sorter?: RadixOrder;

  constructor(readonly k: number) {
    this.inSet = new Uint8Array(k);
    this.order = new Int32Array(k);
    this.others = new Int32Array(Math.max(0, k - 1));
    this.distances = new Float64Array(k + 1);
    this.prefix = new Float64Array(k + 1);
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
    else if (geometry.isLastLayer && this.k >= TREE_MIN_K) this.fastGreedy(geometry, top1, target);
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
    let n = 0;
    for (let i = 0; i < k; i++) if (i !== t) others[n++] = i;
    const bestMask = g.isLastLayer ? lastLayerGrayCode(g, t, others, n) : grayCode(g.subsets(), t, others, n);
    target.fill(0);
    target[t] = 1;
    for (let b = 0; b < n; b++) if (bestMask & (1 << b)) target[others[b]] = 1;
    normaliseWithTop1(target, t);
  }

  /** The greedy below for the last-layer closed form, in sub-quadratic time (same picks). */
  private fastGreedy(g: GradientGeometry, t: number, target: Float64Array): void {
    const { order } = this;
    this.lastLayerGreedy ??= new LastLayerGreedy(this.k);
    const bestSize = this.lastLayerGreedy.run(g, t, order);
    target.fill(0);
    for (let i = 0; i < bestSize; i++) target[order[i]] = 1;
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
   * top-1-keeping candidate farthest from y in L1: t plus the n − 1 least likely classes, best n
   * (the first n on ties).
   *
   * With the others sorted ascending (a_r) and s = 1/n, the distance is
   * |y_t − s| + Σ_{r<n−1} |y_{a_r} − s| + Σ_{r≥n−1} y_{a_r}; the a_r below s form a prefix, so
   * prefix sums give every n in O(1). Those sums round differently from the direct sum, so the
   * sizes within rounding of the best are summed again term by term and compared as before.
   */
  private farthestSubset(y: ArrayLike<number>, yOffset: number, t: number, target: Float64Array): void {
    const { k, order, distances, prefix } = this;
    let n = 0;
    for (let i = 0; i < k; i++) if (i !== t) order[n++] = i;
    (this.sorter ??= new RadixOrder(k)).sort(order, n, y, yOffset);
    // The sort keeps float32 precision: restore the exact (value, index) order should y be finer.
    if (!(y instanceof Float32Array)) order.subarray(0, n).sort((a, b) => y[yOffset + a] - y[yOffset + b] || a - b);
    let total = 0;
    for (let r = 0; r < n; r++) {
      prefix[r] = total;
      total += y[yOffset + order[r]];
    }
    prefix[n] = total;
    const yt = y[yOffset + t];
    let below = n; // classes a_r with y < s, a prefix of the ascending order; shrinks as s does
    let best = -Infinity;
    for (let size = 1; size <= k; size++) {
      const share = 1 / size;
      while (below > 0 && !(y[yOffset + order[below - 1]] < share)) below--;
      const c = Math.min(below, size - 1);
      const head = prefix[size - 1];
      const distance = Math.abs(yt - share) + (c * share - prefix[c]) + (head - prefix[c] - (size - 1 - c) * share) + (total - head);
      distances[size] = distance;
      if (distance > best) best = distance;
    }
    const slack = 64 * (k + 4) * Number.EPSILON * (1 + best);
    let bestSize = 1;
    let bestDistance = -1;
    for (let size = 1; size <= k; size++) {
      if (distances[size] < best - slack) continue;
      let distance = Math.abs(yt - 1 / size);
      for (let r = 0; r < n; r++) {
        const share = r < size - 1 ? 1 / size : 0;
        distance += Math.abs(y[yOffset + order[r]] - share);
      }
      if (distance > bestDistance) {
        bestDistance = distance;
        bestSize = size;
      }
    }
    target.fill(0);
    target[t] = 1;
    for (let r = 0; r < bestSize - 1; r++) target[order[r]] = 1;
    normaliseWithTop1(target, t);
  }
}

/** The subset of `others` (a bit mask) that, with t, scores lowest; the first in Gray-code order on ties. */
function grayCode(state: SubsetState, t: number, others: Int32Array, n: number): number {
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
  return bestMask;
}

/**
 * The Gray-code walk of `exhaustive` for the last-layer closed form, with SubsetState's updates
 * and lastLayerScore inlined (same operations in the same order, so the same scores): the walk
 * visits 2^(K−1) subsets and calls through the interface dominated its cost. Returns the mask.
 */
function lastLayerGrayCode(g: GradientGeometry, t: number, others: Int32Array, n: number): number {
  const p = g.p;
  const my = g.my;
  const pp = g.pp;
  const yMy = g.yMy;
  // lastLayerScore's constants, hoisted without reordering its operations.
  const ppt = pp - p[t];
  const extra = TOP1_WEIGHT * my[t];
  const twoDelta = 2 * TOP1_WEIGHT;
  const deltaTerm = TOP1_WEIGHT * TOP1_WEIGHT * g.diag[t];
  let size = 1;
  let sumP = p[t];
  let sumMy = my[t];
  let bestScore = lastLayerScore(g, t, size, sumP, sumMy);
  let bestMask = 0;
  let mask = 0;
  const count = 1 << n;
  for (let gray = 1; gray < count; gray++) {
    const low = gray & -gray;
    mask ^= low;
    const j = others[31 - Math.clz32(low)];
    if (mask & low) {
      size++;
      sumP += p[j];
      sumMy += my[j];
    } else {
      size--;
      sumP -= p[j];
      sumMy -= my[j];
    }
    const num = sumMy + extra;
    const den = (size * size * pp - 2 * size * sumP + size + twoDelta * (size * ppt - sumP + 1) + deltaTerm) * yMy;
    const score = den > 0 ? (num * Math.abs(num)) / den : Infinity;
    if (score < bestScore) {
      bestScore = score;
      bestMask = mask;
    }
  }
  return bestMask;
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

/**
 * Largest α ∈ [0, 1] with dist(y, (1−α)y + αy*) ≤ ε. KL has no closed form: 15 bisection steps.
 * `support` (length K) is scratch for the KL search; one is allocated when omitted.
 */
export function lineSearch(norm: DistanceNorm, eps: number, y: ArrayLike<number>, yOffset: number, target: Float64Array, support?: Int32Array): number {
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
  // Where y*_i = 0 (every class off the target's support) q_i = (1−α)·y_i, so those terms of
  // KL(y‖q) add up to −log(1−α)·(their mass): one logarithm per step for them all, and one per
  // class only on the support (a single class for one-hot targets).
  const on = support ?? new Int32Array(k);
  let count = 0;
  let offMass = 0;
  for (let i = 0; i < k; i++) {
    const p = y[yOffset + i];
    if (p <= 0) continue;
    if (target[i] === 0) offMass += p;
    else on[count++] = i;
  }
  const klAt = (alpha: number): number => {
    let kl = 0;
    if (offMass > 0) {
      if (alpha >= 1) return Infinity;
      kl = -Math.log(1 - alpha) * offMass;
    }
    for (let n = 0; n < count; n++) {
      const i = on[n];
      const p = y[yOffset + i];
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
