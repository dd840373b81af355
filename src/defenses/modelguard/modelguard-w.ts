/**
 * ModelGuard-W (Tang et al., USENIX Security 2024): per answer y, return the ỹ that minimises
 * ⟨log y, ỹ⟩ over the simplex with ‖ỹ − y‖₁ ≤ ε and y's top-1 class kept. Minimising ⟨log y, ỹ⟩
 * maximises the cross-entropy −Σ ỹ_k log y_k: a knockoff that already equals the victim sees the
 * largest soft-label loss, so the answers pull a copy away from the victim. No surrogate is needed.
 * Like the authors' code, the objective uses log(y + 10⁻⁶), so a class with y = 0 has a finite cost.
 *
 * The linear program is solved exactly (the paper's code calls a generic LP solver per query):
 *
 * Write L = ỹ_t for the top-1 class t (every other class must stay ≤ L). For a fixed L the rest is a
 * separable problem with one budget: each class starts at min(y_j, L) (classes above L are cut down
 * to it), the mass still to place (or to remove, when L > y_t) goes to the lowest-cost classes up to
 * L (or comes from the highest-cost ones down to 0), and the remaining budget, 2 per unit moved,
 * moves mass from the highest-cost classes (down to 0) to the lowest-cost ones (up to L) while
 * that lowers the objective. The cost log(y + δ) is increasing in y, so "lowest cost" is "least
 * likely": one ascending sort of y serves every L. Its value V(L) is convex in L (a partial minimum
 * of a linear program), and the optimum sits at a vertex of the feasible polytope. At a vertex every
 * class is at 0, at L, at its own y_j, or is the one class in between, so L is one of:
 *   - y_t (the top class untouched), or y_j (a class both untouched and level with the top);
 *   - 1/(r+1): the budget is slack and ỹ is uniform on t and the r least likely classes;
 *   - the budget binds and the r least likely classes fill exactly to L (one class donates
 *     partially): L = (ε/2 + P_r)/r when L ≤ y_t, or (ε/2 + y_t + P_r)/(r+1) when L > y_t;
 *   - the budget binds and the d most likely classes are emptied exactly (one class receives
 *     partially): y_t − L + Σ_{j not emptied}(y_j − L)⁺ + Σ_{emptied} y_j = ε/2, solved per d
 *     by a binary search over the sorted values.
 * (P_r is the sum of the r smallest y_j.) V is convex, so a binary search over the sorted y_j finds
 * the stretch holding the optimum, and a second one the best candidate inside it: O(K log K) per row.
 */
import { defineDefense } from '../spec/definition.js';
import { ascendingClasses } from '../math/order.js';
import { argmaxAt, enforceTop1 } from '../math/simplex.js';

/** δ in the objective ⟨log(y + δ), ỹ⟩, as in the authors' code: keeps log 0 finite. */
export const MODELGUARD_LOG_OFFSET = 1e-6;

/** Candidate levels closer than this are one breakpoint computed two ways. */
const MERGE_GAP = 1e-13;

/**
 * Compacts sorted levels[0 .. count) to distinct ones and returns how many. Repeated points would look
 * like a flat stretch, which a convex V has only at its minimum, and one breakpoint computed two ways
 * (a few ulps apart) would straddle a kink with rounding noise that could point the search astray.
 */
function merge(levels: Float64Array, count: number): number {
  let kept = 1;
  for (let i = 1; i < count; i++) if (levels[i] - levels[kept - 1] > MERGE_GAP) levels[kept++] = levels[i];
  return kept;
}

/** One row at a time, with scratch buffers reused across rows. */
export class ModelGuardW {
  private readonly order: Int32Array;
  private readonly keys: Float64Array;
  /** The non-top classes' probabilities, ascending, their costs and prefix sums. */
  private readonly ys: Float64Array;
  private readonly cs: Float64Array;
  private readonly prefix: Float64Array;
  private readonly xs: Float64Array;
  private readonly candidates: Float64Array;
  private n = 0;
  private top = 0;
  private topCost = 0;

  constructor(readonly k: number) {
    this.order = new Int32Array(k);
    this.keys = new Float64Array(k);
    this.ys = new Float64Array(k);
    this.cs = new Float64Array(k);
    this.prefix = new Float64Array(k + 1);
    this.xs = new Float64Array(k);
    this.candidates = new Float64Array(5 * k + 8);
  }

  /**
   * Solves the row y[offset .. offset+k) (first scaled to sum exactly 1 in float64), writes ỹ into
   * `out` and returns the objective ⟨log(y + δ), ỹ⟩ of the scaled row. Returns the top-1 class in `top1`.
   */
  solve(y: Float32Array, offset: number, eps: number, out: Float64Array): { objective: number; top1: number } {
    const { k, order, ys, cs, prefix } = this;
    const t = argmaxAt(y, offset, k);
    let total = 0;
    for (let c = 0; c < k; c++) total += y[offset + c];
    const scale = 1 / total;
    const n = ascendingClasses(y, offset, k, t, order, this.keys);
    this.n = n;
    prefix[0] = 0;
    for (let i = 0; i < n; i++) {
      ys[i] = (y[offset + order[i]] + 0) * scale;
      cs[i] = Math.log(ys[i] + MODELGUARD_LOG_OFFSET);
      prefix[i + 1] = prefix[i] + ys[i];
    }
    const top = y[offset + t] * scale;
    this.top = top;
    this.topCost = Math.log(top + MODELGUARD_LOG_OFFSET);

    const half = eps / 2;
    const lo = Math.max(1 / k, this.emptiedRoot(0, half));
    const hi = Math.min(1, top + half);
    // First the levels y_j (sorted already), y_t and the ends: V is convex there too, so its best point
    // brackets the optimum between its neighbours; then every candidate level inside that bracket.
    const grid = this.candidates;
    let size = 0;
    grid[size++] = lo;
    for (let i = 0; i < n; i++) grid[size++] = Math.min(hi, Math.max(lo, ys[i]));
    grid[size++] = Math.min(hi, Math.max(lo, top));
    grid[size++] = hi;
    size = merge(grid, size);
    const at = this.minimise(grid, size, eps);
    const from = grid[Math.max(0, at - 1)];
    const to = grid[Math.min(size - 1, at + 1)];
    const inside = this.candidates.subarray(0, this.collectCandidates(half, lo, hi, from, to)).sort();
    const best = this.minimise(inside, merge(inside, inside.length), eps);
    const level = inside[best];
    const objective = this.evaluate(level, eps);
    out.fill(0);
    out[t] = level;
    for (let i = 0; i < n; i++) out[order[i]] = this.xs[i];
    return { objective, top1: t };
  }

  /**
   * Index of the least V among sorted, distinct levels (V convex along them): bisection on the sign of
   * its steps, then a step to a neighbour while it is lower, in case rounding misled a comparison.
   */
  private minimise(levels: Float64Array, count: number, eps: number): number {
    let a = 0;
    let b = count - 1;
    while (a < b) {
      const mid = (a + b) >> 1;
      if (this.evaluate(levels[mid], eps) <= this.evaluate(levels[mid + 1], eps)) b = mid;
      else a = mid + 1;
    }
    let value = this.evaluate(levels[a], eps);
    for (const direction of [1, -1]) {
      for (let next = a + direction; next >= 0 && next < count; next += direction) {
        const v = this.evaluate(levels[next], eps);
        if (!(v < value)) break;
        value = v;
        a = next;
      }
    }
    return a;
  }

  /** Writes the candidate levels that fall in [from, to] (clamped to [lo, hi]), the bracket's ends included. */
  private collectCandidates(half: number, lo: number, hi: number, from: number, to: number): number {
    const { n, prefix, candidates } = this;
    const top = this.top;
    let count = 0;
    const push = (level: number): void => {
      const clamped = Number.isFinite(level) ? Math.min(hi, Math.max(lo, level)) : lo;
      if (clamped >= from && clamped <= to) candidates[count++] = clamped;
    };
    push(from);
    push(to);
    push(top);
    for (let i = 0; i < n; i++) push(this.ys[i]);
    for (let r = 0; r <= n; r++) {
      push(1 / (r + 1));
      push((half + top + prefix[r]) / (r + 1));
      if (r > 0) push((half + prefix[r]) / r);
      const root = this.emptiedRoot(r, half);
      if (root <= top) push(root);
    }
    return count;
  }

  /**
   * The level L ≤ y_t at which emptying the d most likely non-top classes, cutting the others down
   * to L and lowering t to L move exactly ε/2 of mass out; +∞ when emptying them alone costs more.
   */
  private emptiedRoot(d: number, half: number): number {
    const { n, ys, prefix } = this;
    const top = this.top;
    const kept = n - d;
    const emptied = prefix[n] - prefix[kept];
    if (emptied - half > 0) return Infinity;
    // Smallest j whose value, taken as L, already moves no more than ε/2 (the excess falls as L rises).
    let a = 0;
    let b = kept;
    while (a < b) {
      const j = (a + b) >> 1;
      const excess = top + prefix[n] - prefix[j] - half - (1 + kept - j) * ys[j];
      if (excess <= 0) b = j;
      else a = j + 1;
    }
    return (top + prefix[n] - prefix[a] - half) / (1 + kept - a);
  }

  /**
   * The best objective with ỹ_t = L (the inner problem, solved greedily), leaving the non-top
   * classes' values in xs. L must lie in the feasible range [lo, hi].
   */
  private evaluate(level: number, eps: number): number {
    const { n, ys, cs, xs } = this;
    let used = Math.abs(level - this.top);
    let placed = 0;
    for (let i = 0; i < n; i++) {
      if (ys[i] > level) {
        xs[i] = level;
        used += ys[i] - level;
      } else xs[i] = ys[i];
      placed += xs[i];
    }
    let receiver = 0;
    let donor = n - 1;
    let need = 1 - level - placed;
    if (need > 0) {
      // Mass t gave up (or that cuts freed) goes to the least likely classes first, up to L.
      used += need;
      while (need > 0 && receiver < n) {
        const room = level - xs[receiver];
        if (room > need) {
          xs[receiver] += need;
          need = 0;
        } else {
          if (room > 0) xs[receiver] = level;
          need -= Math.max(0, room);
          receiver++;
        }
      }
    } else if (need < 0) {
      // t rose above y_t: the mass comes from the most likely classes first.
      let take = -need;
      used += take;
      while (take > 0 && donor >= 0) {
        if (xs[donor] > take) {
          xs[donor] -= take;
          take = 0;
        } else {
          take -= xs[donor];
          xs[donor] = 0;
          donor--;
        }
      }
    }
    let exchange = (eps - used) / 2;
    while (exchange > 0) {
      while (receiver < n && !(xs[receiver] < level)) receiver++;
      while (donor >= 0 && !(xs[donor] > 0)) donor--;
      if (receiver >= donor || !(cs[donor] > cs[receiver])) break;
      const room = level - xs[receiver];
      const have = xs[donor];
      if (exchange < room && exchange < have) {
        xs[receiver] += exchange;
        xs[donor] -= exchange;
        break;
      }
      if (room <= have) {
        xs[receiver] = level;
        xs[donor] -= room;
        exchange -= room;
        receiver++;
      } else {
        xs[receiver] += have;
        xs[donor] = 0;
        exchange -= have;
        donor--;
      }
    }
    let value = this.topCost * level;
    for (let i = 0; i < n; i++) value += cs[i] * xs[i];
    return value;
  }
}

export const modelguardW = defineDefense({
  name: 'modelguard-w',
  summary: 'ModelGuard-W: within an L1 budget, move mass to the least likely classes (maximising the cross-entropy with the true answer), top-1 kept',
  params: {
    eps: {
      type: 'number',
      min: 0,
      exclusiveMin: true,
      max: 2,
      default: 0.5,
      description: 'L1 budget ε (2 is the largest L1 distance between two probability vectors)',
    },
  },
  create: ({ eps }) => ({
    needs: [],
    keepsTop1: true,
    onSimplex: true,
    run({ rows, cols, data }, out) {
      const solver = new ModelGuardW(cols);
      const row = new Float64Array(cols);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        const { top1 } = solver.solve(data, o, eps, row);
        for (let c = 0; c < cols; c++) out[o + c] = row[c];
        // The optimum often ties other classes with the top one at L; float32 needs a strict winner.
        enforceTop1(out, o, cols, top1);
      }
    },
  }),
});
