/**
 * The argmax oracle's greedy growth of S for the last-layer closed form, without scoring every
 * remaining class at every step.
 *
 * Adding class j to S gives the score lastLayerScore(n + 1, P + p_j, Σ_S My + (My)_j): it depends
 * on j only through (p_j, (My)_j), increases with (My)_j (the numerator) and, for a fixed
 * numerator sign, moves monotonically with p_j (the denominator decreases as p_j grows). So a
 * group of classes with (My)_j ≥ m and p_j in [lo, hi] scores at least the score built from m and
 * lo or hi, whichever is worse for the bound. Classes sit in a segment tree ordered by p (narrow
 * p ranges per node) holding, per node, the smallest My, the p range and the smallest index of
 * the classes still outside S; each step is a depth-first branch and bound, stronger child first,
 * that skips every node whose bound exceeds the best score found so far (or equals it without a
 * smaller index), and a picked class leaves the tree in O(log K).
 *
 * Bounds are evaluated with the very operations of the score, each monotone under rounding, so
 * they hold exactly in floating point: each step picks the class the full scan picks, ties
 * included (smallest index among equal scores). Every ⌈√K⌉ steps a bound over all larger sets
 * (cannotImprove) may end the growth early, once no later prefix can beat the best one.
 */
import { lastLayerDenominator, lastLayerScore, TOP1_WEIGHT, type GradientGeometry } from './mad-geometry.js';
import { RadixOrder } from '../math/radix-order.js';

export class LastLayerGreedy {
  private readonly leaves: number;
  /** Per tree node (root 1, leaves from `leaves`), over the classes outside S: smallest My, smallest and largest p, smallest index. */
  private readonly minMy: Float64Array;
  private readonly pLo: Float64Array;
  private readonly pHi: Float64Array;
  private readonly minIndex: Int32Array;
  private readonly leafClass: Int32Array;
  private readonly leafOf: Int32Array;
  private readonly sorter: RadixOrder;
  private readonly byP: Int32Array;
  private readonly byMy: Int32Array;
  private readonly taken: Uint8Array;
  private readonly stackNode: Int32Array;
  private readonly stackBound: Float64Array;
  /** How many classes the last run put in `order` before it stopped (K unless it stopped early). */
  entered = 0;

  constructor(readonly k: number) {
    let leaves = 2; // the search starts by expanding the root, so the root is never a leaf
    while (leaves < k - 1) leaves *= 2;
    this.leaves = leaves;
    this.minMy = new Float64Array(2 * leaves);
    this.pLo = new Float64Array(2 * leaves);
    this.pHi = new Float64Array(2 * leaves);
    this.minIndex = new Int32Array(2 * leaves);
    this.leafClass = new Int32Array(leaves);
    this.leafOf = new Int32Array(k);
    this.sorter = new RadixOrder(k);
    this.byP = new Int32Array(k);
    this.byMy = new Int32Array(k);
    this.taken = new Uint8Array(k);
    // Depth-first with both children pushed: at most one pending sibling per level, plus the root.
    const depth = Math.log2(leaves) + 2;
    this.stackNode = new Int32Array(depth);
    this.stackBound = new Float64Array(depth);
  }

  /**
   * Runs the greedy from S = {t}, writing the classes in the order they enter into `order`
   * (order[0] = t), until S holds every class or no larger S can beat the best prefix; returns the
   * size of the best prefix.
   */
  run(g: GradientGeometry, t: number, order: Int32Array): number {
    const { k, leaves, minMy, pLo, pHi, minIndex, leafClass, leafOf, byP, stackNode, stackBound } = this;
    const { p, my } = g;
    let count = 0;
    for (let j = 0; j < k; j++) if (j !== t) byP[count++] = j;
    this.sorter.sort(byP, count, p);
    this.byMy.set(byP.subarray(0, count));
    this.sorter.sort(this.byMy, count, my);
    const taken = this.taken;
    taken.fill(0);
    taken[t] = 1;
    let absMy = 0;
    for (let j = 0; j < k; j++) absMy += Math.abs(my[j]);
    const interval = Math.ceil(Math.sqrt(k));
    for (let i = 0; i < leaves; i++) {
      const node = leaves + i;
      if (i < count) {
        const j = byP[i];
        leafClass[i] = j;
        leafOf[j] = node;
        minMy[node] = my[j];
        pLo[node] = p[j];
        pHi[node] = p[j];
        minIndex[node] = j;
      } else {
        minMy[node] = Infinity;
        pLo[node] = Infinity;
        pHi[node] = -Infinity;
        minIndex[node] = k;
      }
    }
    for (let node = leaves - 1; node >= 1; node--) pull(minMy, pLo, pHi, minIndex, node);

    // Per-step constants of lastLayerDenominator, hoisted without reordering its operations, so
    // that bounds and scores here are bit-identical to lastLayerScore.
    const { pp, yMy } = g;
    const twoDelta = 2 * TOP1_WEIGHT;
    const deltaTerm = TOP1_WEIGHT * TOP1_WEIGHT * g.diag[t];
    const ppt = pp - p[t];
    const extra = TOP1_WEIGHT * my[t];
    let sumP = p[t];
    let sumMy = my[t];
    let bestScore = lastLayerScore(g, t, 1, sumP, sumMy);
    let bestSize = 1;
    order[0] = t;
    this.entered = 1;
    for (let size = 1; size < k; size++) {
      const n = size + 1;
      const nnpp = n * n * pp;
      const twoN = 2 * n;
      const nct = n * ppt;
      let pick = -1;
      let pickScore = Infinity;
      let top = 0;
      stackNode[top] = 1;
      stackBound[top++] = -Infinity;
      while (top > 0) {
        top--;
        // A node whose bound equals the best score is searched only if it holds a smaller index,
        // which would win the tie; skipping the others keeps runs of identical classes cheap.
        const parent = stackNode[top];
        if (stackBound[top] > pickScore || (stackBound[top] === pickScore && pick >= 0 && minIndex[parent] > pick)) continue;
        const first = 2 * parent;
        for (let child = first; child <= first + 1; child++) {
          const myLo = minMy[child];
          if (myLo === Infinity) continue;
          if (child >= leaves) {
            const j = leafClass[child - leaves];
            const s = sumP + p[j];
            const num = sumMy + myLo + extra;
            const den = (nnpp - twoN * s + n + twoDelta * (nct - s + 1) + deltaTerm) * yMy;
            const score = den > 0 ? (num * Math.abs(num)) / den : Infinity;
            if (pick < 0 || score < pickScore || (score === pickScore && j < pick)) {
              pick = j;
              pickScore = score;
            }
            continue;
          }
          // The node's smallest numerator with its most favourable p: a negative numerator
          // scores lowest over the smallest denominator (largest p), a positive one over the largest.
          const num = sumMy + myLo + extra;
          const s = sumP + (num < 0 ? pHi[child] : pLo[child]);
          const den = (nnpp - twoN * s + n + twoDelta * (nct - s + 1) + deltaTerm) * yMy;
          const bound = den > 0 ? (num * Math.abs(num)) / den : num < 0 ? -Infinity : Infinity;
          if (bound > pickScore || (bound === pickScore && pick >= 0 && minIndex[child] > pick)) continue;
          // Search the stronger child first: the one on top of the stack.
          if (top > 0 && child === first + 1 && stackNode[top - 1] === first && bound >= stackBound[top - 1]) {
            stackNode[top] = first;
            stackBound[top] = stackBound[top - 1];
            stackNode[top - 1] = child;
            stackBound[top - 1] = bound;
            top++;
          } else {
            stackNode[top] = child;
            stackBound[top++] = bound;
          }
        }
      }
      sumP += p[pick];
      sumMy += my[pick];
      order[size] = pick;
      taken[pick] = 1;
      let node = leafOf[pick];
      minMy[node] = Infinity;
      pLo[node] = Infinity;
      pHi[node] = -Infinity;
      minIndex[node] = k;
      for (node >>= 1; node >= 1; node >>= 1) pull(minMy, pLo, pHi, minIndex, node);
      if (pickScore < bestScore) {
        bestScore = pickScore;
        bestSize = size + 1;
      }
      this.entered = size + 1;
      if (size % interval === 0 && size + 1 < k && this.cannotImprove(g, t, size + 1, count, sumP, sumMy, absMy, bestScore)) break;
    }
    return bestSize;
  }

  /**
   * Whether no set S' ⊋ S can score below `best`, so the rest of the greedy cannot change the
   * answer. For |S'| = m the numerator is at least that of S plus the m − |S| smallest My left,
   * and the denominator depends on S' only through P' = Σ p, decreasing in it: at least its value
   * with the m − |S| largest p left. Different sums round differently from the greedy's, so the
   * bound must clear `best` by a margin covering that rounding.
   */
  private cannotImprove(g: GradientGeometry, t: number, size: number, count: number, sumP: number, sumMy: number, absMy: number, best: number): boolean {
    if (!(best < 0)) return false;
    const { k, byMy, byP, taken } = this;
    const { p, my, pp } = g;
    const extra = TOP1_WEIGHT * my[t];
    let front = 0;
    let back = count - 1;
    let addMy = 0;
    let addP = 0;
    for (let m = size + 1; m <= k; m++) {
      while (taken[byMy[front]]) front++;
      addMy += my[byMy[front++]];
      while (taken[byP[back]]) back--;
      addP += p[byP[back--]];
      const num = sumMy + addMy + extra;
      if (num >= 0) continue; // the score is at least 0 > best
      const s = sumP + addP;
      const den = lastLayerDenominator(g, t, m, s);
      if (!(den > 0)) return false;
      // Relative rounding error of this bound and of the greedy's own scores: the sums of up to
      // m + 2 terms against |num|, and the cancellation in the denominator.
      const scale = (m * m * pp + 2 * m * s + m + 1) * g.yMy;
      const rel = 8 * (m + 4) * Number.EPSILON * (absMy / -num + scale / den) + 1e-12;
      if ((-(num * num) / den) * (1 + rel) <= best) return false;
    }
    return true;
  }
}

function pull(minMy: Float64Array, pLo: Float64Array, pHi: Float64Array, minIndex: Int32Array, node: number): void {
  const a = 2 * node;
  const b = a + 1;
  minIndex[node] = minIndex[a] < minIndex[b] ? minIndex[a] : minIndex[b];
  minMy[node] = minMy[a] < minMy[b] ? minMy[a] : minMy[b];
  pLo[node] = pLo[a] < pLo[b] ? pLo[a] : pLo[b];
  pHi[node] = pHi[a] > pHi[b] ? pHi[a] : pHi[b];
}
