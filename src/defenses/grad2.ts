/**
 * GRAD², gradient redirection (Mazeika, Li, Forsyth, ICML 2022). The attacker's training gradient for
 * an answer ỹ is linear in ỹ: with G the surrogate's K × D matrix of per-class log-likelihood
 * gradients, the soft cross-entropy's gradient is −Gᵀỹ. GRAD² picks ỹ, within a budget ε of y, that
 * maximises the inner product ⟨Gᵀỹ, d⟩ with a target direction d, as the paper does (its "provably
 * optimal" algorithm is for this linear objective, not for the cosine). Directions here are
 * d = Gᵀw for a K-vector w, so the objective is ỹᵀMw with M = GGᵀ, the same K × K geometry MAD uses:
 *   - reverse (the paper's untargeted defense): w = −y, steer the update against the one y would give;
 *   - least: w = e_τ, τ the least likely class: steer it toward teaching that wrong label;
 *   - next: w = e_τ, τ = (top-1 + 1) mod K: a fixed relabelling the knockoff would learn.
 * Last-layer closed form: M_ij ∝ ‖p‖² − p_i − p_j + δ_ij, so (Mw)_i = w_i − p_i·Σw up to a constant
 * that no answer on the simplex can change. jacobian=full reads the per-row Gram matrices instead.
 * (So on the last layer, reverse has a = p − y: the L2 optimum moves y straight toward the surrogate's
 * p, shrinking the attacker's gradient rather than turning it, until it passes p; L1 turns it.)
 *
 * With a = Mw the problem is: maximise aᵀỹ over the simplex with ‖ỹ − y‖ ≤ ε.
 *   - L1 (the paper's budget): move up to ε/2 of mass to the class with the largest a, taking it
 *     from the classes with the smallest a first; exact for this linear program.
 *   - L2: ỹ(τ) = Π_simplex(y + τa) traces the optimum for growing budgets; its support only shrinks
 *     (a class leaves when its coordinate reaches 0, and the mean of a over the rest only rises), and
 *     on a fixed support ‖ỹ − y‖² is quadratic in τ, so the exact answer follows from a few support
 *     shrinks, each solved in closed form (see solveL2).
 * Both spend the whole budget unless the best point of the simplex is closer; neither keeps top-1.
 */
import { gradientInputs } from './mad/gradient-inputs.js';
import { defineDefense } from './spec/definition.js';
import { DefenseSpecError } from './errors.js';
import { argmaxAt } from './math/simplex.js';

export type RedirectionTarget = 'reverse' | 'least' | 'next';
export type RedirectionNorm = 'l1' | 'l2';

/** The target weights w for a row (direction d = Gᵀw). */
export function targetWeights(target: RedirectionTarget, y: ArrayLike<number>, yOffset: number, k: number, w: Float64Array): void {
  if (target === 'reverse') {
    for (let i = 0; i < k; i++) w[i] = -y[yOffset + i];
    return;
  }
  let tau: number;
  if (target === 'next') tau = (argmaxAt(y, yOffset, k) + 1) % k;
  else {
    tau = 0;
    for (let i = 1; i < k; i++) if (y[yOffset + i] < y[yOffset + tau]) tau = i;
  }
  w.fill(0);
  w[tau] = 1;
}

/**
 * a = Mw for the last-layer closed form, up to a constant shift and a positive factor ‖h‖². Returns
 * the size of the terms summed, against which a spread of a is told from rounding noise.
 */
export function lastLayerAlignment(p: ArrayLike<number>, pOffset: number, w: Float64Array, a: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < w.length; i++) sum += w[i];
  let scale = 0;
  for (let i = 0; i < w.length; i++) {
    a[i] = w[i] - sum * p[pOffset + i];
    scale = Math.max(scale, Math.abs(w[i]) + Math.abs(sum * p[pOffset + i]));
  }
  return scale;
}

/** a = Mw from a K×K Gram matrix at `gramOffset`, symmetrised as MAD does; returns the terms' size. */
export function gramAlignment(gram: ArrayLike<number>, gramOffset: number, w: Float64Array, a: Float64Array): number {
  const k = w.length;
  let scale = 0;
  for (let i = 0; i < k; i++) {
    let acc = 0;
    let size = 0;
    for (let j = 0; j < k; j++) {
      const term = 0.5 * (gram[gramOffset + i * k + j] + gram[gramOffset + j * k + i]) * w[j];
      acc += term;
      size += Math.abs(term);
    }
    a[i] = acc;
    scale = Math.max(scale, size);
  }
  return scale;
}

/**
 * Whether a is constant up to rounding (e.g. a surrogate that agrees with the answer, p = y, for the
 * reverse target): then no answer moves the gradient toward the target, and rounding noise must not
 * pick one that spends the whole budget.
 */
export function isFlat(a: Float64Array, scale: number): boolean {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < a.length; i++) {
    if (a[i] < lo) lo = a[i];
    if (a[i] > hi) hi = a[i];
  }
  return !(hi - lo > 1e-12 * scale);
}

/** Solvers for max aᵀx over the simplex with ‖x − y‖ ≤ ε, with scratch reused across rows. */
export class Redirection {
  private readonly order: Int32Array;
  private readonly inSupport: Uint8Array;
  private readonly unit: Float64Array;
  private readonly centred: Float64Array;

  constructor(readonly k: number) {
    this.order = new Int32Array(k);
    this.inSupport = new Uint8Array(k);
    this.unit = new Float64Array(k);
    this.centred = new Float64Array(k);
  }

  solve(norm: RedirectionNorm, y: ArrayLike<number>, yOffset: number, a: Float64Array, eps: number, out: Float64Array): void {
    if (norm === 'l1') this.solveL1(y, yOffset, a, eps, out);
    else this.solveL2(y, yOffset, a, eps, out);
  }

  /** All of the moved mass goes to the best class; it comes from the worst classes first. */
  solveL1(y: ArrayLike<number>, yOffset: number, a: Float64Array, eps: number, out: Float64Array): void {
    const { k, order } = this;
    for (let i = 0; i < k; i++) out[i] = y[yOffset + i];
    let best = 0;
    for (let i = 1; i < k; i++) if (a[i] > a[best]) best = i;
    let n = 0;
    for (let i = 0; i < k; i++) if (i !== best && a[i] < a[best] && out[i] > 0) order[n++] = i;
    // Weighted quickselect on (a, index): empties the donors with the smallest a until the mass is found,
    // without sorting them all (O(K) on average).
    const before = (i: number, j: number): boolean => a[i] < a[j] || (a[i] === a[j] && i < j);
    let left = Math.min(eps / 2, 1 - out[best]);
    let moved = 0;
    let lo = 0;
    let hi = n - 1;
    while (left > 0 && lo <= hi) {
      const mid = (lo + hi) >> 1;
      const pivot = order[mid];
      order[mid] = order[hi];
      order[hi] = pivot;
      let store = lo;
      let mass = 0;
      for (let i = lo; i < hi; i++) {
        if (!before(order[i], pivot)) continue;
        const swap = order[i];
        order[i] = order[store];
        order[store++] = swap;
        mass += out[swap];
      }
      order[hi] = order[store];
      order[store] = pivot;
      if (mass >= left && store > lo) {
        hi = store - 1;
        continue;
      }
      for (let i = lo; i < store; i++) {
        moved += out[order[i]];
        out[order[i]] = 0;
      }
      left -= mass;
      const take = Math.min(Math.max(0, left), out[pivot]);
      out[pivot] -= take;
      moved += take;
      left -= take;
      lo = store + 1;
    }
    out[best] += moved;
  }

  /**
   * Follows x(τ) = Π_simplex(y + τa) until ‖x − y‖₂ = ε or the path ends (x maximises aᵀx). On a
   * fixed support S the squared distance is quadratic in τ, and its growth only slows as S shrinks, so
   * the τ where S's quadratic reaches ε² never passes the answer: step there, shrink S to the true
   * support at that τ, and repeat until S holds; each step drops at least one class, usually many.
   */
  solveL2(y: ArrayLike<number>, yOffset: number, alignment: Float64Array, eps: number, out: Float64Array): void {
    const { k, inSupport, order, unit: a, centred } = this;
    // The solution ignores shifts and positive scalings of a: work on a spread over [0, 1].
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < k; i++) {
      lo = Math.min(lo, alignment[i]);
      hi = Math.max(hi, alignment[i]);
    }
    for (let i = 0; i < k; i++) a[i] = hi > lo ? (alignment[i] - lo) / (hi - lo) : 0;
    // Support for small τ: every class with mass, plus the empty classes whose a beats the support's mean.
    let n = 0;
    let sumA = 0;
    let zeros = 0;
    for (let i = 0; i < k; i++) {
      if (y[yOffset + i] > 0) {
        inSupport[i] = 1;
        n++;
        sumA += a[i];
      } else {
        inSupport[i] = 0;
        order[zeros++] = i;
      }
    }
    if (zeros > 0) {
      const empty = order.subarray(0, zeros).sort((i, j) => a[j] - a[i] || i - j);
      for (let z = 0; z < zeros; z++) {
        if (n > 0 && !(a[empty[z]] > sumA / n)) break;
        inSupport[empty[z]] = 1;
        n++;
        sumA += a[empty[z]];
      }
    }
    // On a support S (the rest at 0, holding outMass of y), x_i = y_i + τ(a_i − ā) + outMass/|S| and
    // ‖x − y‖² = outSquares + outMass²/|S| + τ²·Σ_S (a_i − ā)².
    let tau = 0;
    let step = 0;
    let outMass = 0;
    for (;;) {
      n = 0;
      sumA = 0;
      outMass = 0;
      let outSquares = 0;
      let top = -Infinity;
      let bottom = Infinity;
      for (let i = 0; i < k; i++) {
        if (inSupport[i]) {
          n++;
          sumA += a[i];
          top = Math.max(top, a[i]);
          bottom = Math.min(bottom, a[i]);
        } else {
          outMass += y[yOffset + i];
          outSquares += y[yOffset + i] * y[yOffset + i];
        }
      }
      const spread = centre(a, inSupport, sumA / n, centred);
      // No direction left (one class, or a tie on the support): x stays where the path ended.
      if (!(top - bottom > FLAT)) {
        step = tau;
        break;
      }
      const radius = Math.sqrt(Math.max(0, eps * eps - outSquares - (outMass * outMass) / n));
      const reach = radius / Math.sqrt(spread);
      if (!this.shrink(y, yOffset, reach)) {
        // S holds up to the budget: step along the unit direction, which keeps ‖x − y‖ = ε exact.
        for (let i = 0; i < k; i++) if (inSupport[i]) centred[i] /= Math.sqrt(spread);
        step = radius;
        break;
      }
      tau = reach;
    }
    let total = 0;
    for (let i = 0; i < k; i++) {
      out[i] = inSupport[i] ? Math.max(0, y[yOffset + i] + step * centred[i] + outMass / n) : 0;
      total += out[i];
    }
    for (let i = 0; i < k; i++) out[i] /= total;
  }

  /** Shrinks the support to that of Π_simplex(y + τa) (Michelot's passes, from a superset); true if it shrank. */
  private shrink(y: ArrayLike<number>, yOffset: number, tau: number): boolean {
    const { k, inSupport, unit: a } = this;
    let shrank = false;
    for (;;) {
      let n = 0;
      let sum = 0;
      for (let i = 0; i < k; i++) {
        if (!inSupport[i]) continue;
        n++;
        sum += y[yOffset + i] + tau * a[i];
      }
      const mu = (sum - 1) / n;
      let removed = false;
      for (let i = 0; i < k; i++) {
        if (inSupport[i] && n > 1 && y[yOffset + i] + tau * a[i] <= mu) {
          inSupport[i] = 0;
          n--;
          removed = true;
        }
      }
      if (!removed) return shrank;
      shrank = true;
    }
  }
}

/** Differences of a (spread over [0, 1]) below this count as ties: beyond float64's reach once scaled by τ. */
const FLAT = 1e-9;

/**
 * Writes a_i − mean over the support into `centred`, re-centred once more so that they sum to 0 to
 * rounding (the cross term in ‖x − y‖² vanishes), and returns their sum of squares.
 */
function centre(a: Float64Array, inSupport: Uint8Array, mean: number, centred: Float64Array): number {
  let n = 0;
  let drift = 0;
  for (let i = 0; i < a.length; i++) {
    if (!inSupport[i]) continue;
    centred[i] = a[i] - mean;
    drift += centred[i];
    n++;
  }
  let spread = 0;
  for (let i = 0; i < a.length; i++) {
    if (!inSupport[i]) continue;
    centred[i] -= drift / n;
    spread += centred[i] * centred[i];
  }
  return spread;
}

function scaledRow(data: ArrayLike<number>, offset: number, out: Float64Array): void {
  let total = 0;
  for (let i = 0; i < out.length; i++) total += data[offset + i];
  for (let i = 0; i < out.length; i++) out[i] = data[offset + i] / total;
}

export const grad2 = defineDefense({
  name: 'grad2',
  summary: 'GRAD² gradient redirection: within a budget, steer the attacker’s training gradient on a surrogate toward a target direction',
  aliases: { 'gradient-redirection': {} },
  params: {
    eps: { type: 'number', min: 0, exclusiveMin: true, default: 0.5, description: 'perturbation budget ε in the chosen norm' },
    norm: { type: 'enum', values: ['l1', 'l2'], default: 'l1', description: 'distance that the budget bounds (the paper uses l1)' },
    target: {
      type: 'enum',
      values: ['reverse', 'least', 'next'],
      default: 'reverse',
      description: 'reverse: against the gradient y gives (untargeted); least: toward the least likely label; next: toward label (top-1 + 1) mod K',
    },
    jacobian: {
      type: 'enum',
      values: ['last-layer', 'full'],
      default: 'last-layer',
      description: 'gradients over the surrogate’s last layer (closed form) or all its parameters (Gram matrices)',
    },
  },
  check({ eps, norm }) {
    const limit = norm === 'l1' ? 2 : Math.SQRT2;
    if (eps > limit)
      throw new DefenseSpecError(`grad2: eps=${eps} exceeds the largest possible ${norm} distance between two probability vectors (${limit.toFixed(4)})`);
  },
  create: ({ eps, norm, target, jacobian }) => {
    const full = jacobian === 'full';
    const distance = norm as RedirectionNorm;
    const goal = target as RedirectionTarget;
    return {
      needs: [full ? 'surrogateGram' : 'surrogate'],
      keepsTop1: false,
      onSimplex: true,
      run(input, out, ctx) {
        const { rows, cols, data } = input;
        const { gram, surrogate } = gradientInputs('grad2', full, input, ctx);
        const solver = new Redirection(cols);
        const w = new Float64Array(cols);
        const a = new Float64Array(cols);
        const y = new Float64Array(cols);
        const p = new Float64Array(cols);
        const row = new Float64Array(cols);
        for (let r = 0; r < rows; r++) {
          const o = r * cols;
          // Rows summing to 1 exactly: float32 sums are off by ~1e-8, enough to fake a direction when p = y.
          scaledRow(data, o, y);
          targetWeights(goal, y, 0, cols, w);
          let scale: number;
          if (surrogate) {
            scaledRow(surrogate, o, p);
            scale = lastLayerAlignment(p, 0, w, a);
          } else scale = gramAlignment(gram as ArrayLike<number>, r * cols * cols, w, a);
          if (isFlat(a, scale)) {
            for (let c = 0; c < cols; c++) out[o + c] = data[o + c];
            continue;
          }
          solver.solve(distance, y, 0, a, eps, row);
          for (let c = 0; c < cols; c++) out[o + c] = row[c];
        }
      },
    };
  },
});
