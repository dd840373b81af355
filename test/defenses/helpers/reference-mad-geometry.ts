/** Frozen copy of src/defenses/mad/mad-geometry.ts before the fast argmax search: the reference the property tests compare against. */
/**
 * The geometry MAD's oracle needs: inner products between the attacker's gradient directions
 * Gᵀa for probability vectors a. With M = G Gᵀ (K×K), ⟨Gᵀa, Gᵀb⟩ = aᵀMb, so the oracle needs
 * M·y, diag(M), yᵀMy and, for subsets S of classes, 1_SᵀM1_S and (M1_S)_t.
 *
 * Last-layer closed form: for a softmax surrogate p, row k of G is vec((p − e_k)hᵀ), so
 * M_ij = ‖h‖²·(p − e_i)·(p − e_j) = ‖h‖²·(‖p‖² − p_i − p_j + δ_ij). The factor ‖h‖² cancels in
 * every angle and is dropped; the structure makes every subset update O(1).
 */

/** Weight added to the top-1 class t of a subset candidate so that t stays its unique maximum. */
export const TOP1_WEIGHT = 1e-5;

/**
 * Incremental statistics of the candidate w = 1_S + δ·e_t as classes enter or leave S (t ∈ S):
 * cos∠(Gᵀw, Gᵀy) = wᵀMy / √(wᵀMw · yᵀMy).
 */
export interface SubsetState {
  /** S = {t}. */
  start(t: number): void;
  add(j: number): void;
  remove(j: number): void;
  /** sign(cos)·cos² of the current S, ordered like the cosine (+∞ when undefined). */
  score(): number;
  /** The score S ∪ {j} would have, for j ∉ S, without changing S. */
  scoreWith(j: number): number;
}

export class GradientGeometry {
  readonly k: number;
  /** M·y */
  readonly my: Float64Array;
  /** diag(M) */
  readonly diag: Float64Array;
  /** yᵀMy */
  yMy = 0;
  private readonly lastLayer: LastLayerSubsets;
  private readonly gramSubsets: GramSubsets;
  private useGram = false;

  constructor(k: number) {
    this.k = k;
    this.my = new Float64Array(k);
    this.diag = new Float64Array(k);
    this.lastLayer = new LastLayerSubsets(this);
    this.gramSubsets = new GramSubsets(this);
  }

  /** Last-layer geometry from the surrogate's softmax p and the answer y (rows at the given offsets). */
  setLastLayer(p: ArrayLike<number>, pOffset: number, y: ArrayLike<number>, yOffset: number): this {
    const { k } = this;
    const pv = this.lastLayer.p;
    let pp = 0;
    let py = 0;
    let yMy = 0;
    for (let i = 0; i < k; i++) {
      const pi = p[pOffset + i];
      const yi = y[yOffset + i];
      pv[i] = pi;
      pp += pi * pi;
      py += pi * yi;
      yMy += (pi - yi) * (pi - yi);
    }
    for (let i = 0; i < k; i++) {
      // (p − e_i)·(p − y) and (p − e_i)·(p − e_i)
      this.my[i] = pp - py - pv[i] + y[yOffset + i];
      this.diag[i] = pp - 2 * pv[i] + 1;
    }
    this.lastLayer.pp = pp;
    this.yMy = yMy;
    this.useGram = false;
    return this;
  }

  /** Geometry from an explicit Gram matrix (full-parameter Jacobian), rows at `gramOffset`. */
  setGram(gram: ArrayLike<number>, gramOffset: number, y: ArrayLike<number>, yOffset: number): this {
    const { k } = this;
    const m = this.gramSubsets.m;
    let yMy = 0;
    for (let i = 0; i < k; i++) {
      let acc = 0;
      for (let j = 0; j < k; j++) {
        // Symmetrise: Gram matrices from floating-point backward passes are symmetric only approximately.
        const value = 0.5 * (gram[gramOffset + i * k + j] + gram[gramOffset + j * k + i]);
        m[i * k + j] = value;
        acc += value * y[yOffset + j];
      }
      this.my[i] = acc;
      this.diag[i] = m[i * k + i];
      yMy += y[yOffset + i] * acc;
    }
    this.yMy = yMy;
    this.useGram = true;
    return this;
  }

  subsets(): SubsetState {
    return this.useGram ? this.gramSubsets : this.lastLayer;
  }
}

/** sign(cos)·cos² of the candidate: ordered like the cosine, without a square root. */
function candidateScore(num: number, q: number, ct: number, mtt: number, yMy: number): number {
  const den = (q + 2 * TOP1_WEIGHT * ct + TOP1_WEIGHT * TOP1_WEIGHT * mtt) * yMy;
  return den > 0 ? (num * Math.abs(num)) / den : Infinity;
}

/**
 * O(1) updates from the closed form: with n = |S| and P = Σ_S p_i,
 * 1_SᵀM1_S = n²‖p‖² − 2nP + n and (M1_S)_t = n(‖p‖² − p_t) − P + 1.
 */
class LastLayerSubsets implements SubsetState {
  readonly p: Float64Array;
  pp = 0;
  private t = 0;
  private n = 0;
  private sumP = 0;
  private sumMy = 0;

  constructor(private readonly g: GradientGeometry) {
    this.p = new Float64Array(g.k);
  }

  start(t: number): void {
    this.t = t;
    this.n = 1;
    this.sumP = this.p[t];
    this.sumMy = this.g.my[t];
  }
  add(j: number): void {
    this.n++;
    this.sumP += this.p[j];
    this.sumMy += this.g.my[j];
  }
  remove(j: number): void {
    this.n--;
    this.sumP -= this.p[j];
    this.sumMy -= this.g.my[j];
  }
  score(): number {
    return this.evaluate(this.n, this.sumP, this.sumMy);
  }
  scoreWith(j: number): number {
    return this.evaluate(this.n + 1, this.sumP + this.p[j], this.sumMy + this.g.my[j]);
  }
  private evaluate(n: number, sumP: number, sumMy: number): number {
    const { pp, t, g } = this;
    const q = n * n * pp - 2 * n * sumP + n;
    const ct = n * (pp - this.p[t]) - sumP + 1;
    return candidateScore(sumMy + TOP1_WEIGHT * g.my[t], q, ct, g.diag[t], g.yMy);
  }
}

/** O(K) updates from an explicit M, through c = M·1_S. */
class GramSubsets implements SubsetState {
  readonly m: Float64Array;
  private readonly c: Float64Array;
  private t = 0;
  private q = 0;
  private sumMy = 0;

  constructor(private readonly g: GradientGeometry) {
    this.m = new Float64Array(g.k * g.k);
    this.c = new Float64Array(g.k);
  }

  start(t: number): void {
    const { k } = this.g;
    this.t = t;
    for (let i = 0; i < k; i++) this.c[i] = this.m[t * k + i];
    this.q = this.m[t * k + t];
    this.sumMy = this.g.my[t];
  }
  add(j: number): void {
    const { k } = this.g;
    this.q += 2 * this.c[j] + this.m[j * k + j];
    for (let i = 0; i < k; i++) this.c[i] += this.m[j * k + i];
    this.sumMy += this.g.my[j];
  }
  remove(j: number): void {
    const { k } = this.g;
    for (let i = 0; i < k; i++) this.c[i] -= this.m[j * k + i];
    this.q -= 2 * this.c[j] + this.m[j * k + j];
    this.sumMy -= this.g.my[j];
  }
  score(): number {
    const { g, t } = this;
    return candidateScore(this.sumMy + TOP1_WEIGHT * g.my[t], this.q, this.c[t], g.diag[t], g.yMy);
  }
  scoreWith(j: number): number {
    const { g, t, m } = this;
    const k = g.k;
    return candidateScore(this.sumMy + g.my[j] + TOP1_WEIGHT * g.my[t], this.q + 2 * this.c[j] + m[j * k + j], this.c[t] + m[t * k + j], g.diag[t], g.yMy);
  }
}
