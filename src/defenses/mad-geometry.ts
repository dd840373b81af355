/**
 * The geometry MAD's oracle needs: inner products between the attacker's gradient directions
 * Gᵀa for probability vectors a. With M = G Gᵀ (K×K), ⟨Gᵀa, Gᵀb⟩ = aᵀMb, so the oracle needs
 * only M·y, diag(M), yᵀMy and, for the argmax oracle, M itself.
 *
 * Last-layer closed form: for a softmax surrogate p, row k of G is vec((p − e_k)hᵀ), so
 * M_ij = ‖h‖²·(p − e_i)·(p − e_j). The factor ‖h‖² cancels in every angle and is dropped.
 */

export class GradientGeometry {
  readonly k: number;
  /** M·y */
  readonly my: Float64Array;
  /** diag(M) */
  readonly diag: Float64Array;
  /** yᵀMy */
  yMy = 0;
  /** M, K×K row-major, filled on demand by `matrix()`. */
  private readonly full: Float64Array;
  private fillMatrix: () => void = () => {};
  private matrixReady = false;

  // Last-layer state, kept to fill M lazily.
  private readonly p: Float64Array;
  private pp = 0;

  constructor(k: number) {
    this.k = k;
    this.my = new Float64Array(k);
    this.diag = new Float64Array(k);
    this.full = new Float64Array(k * k);
    this.p = new Float64Array(k);
  }

  /** Last-layer geometry from the surrogate's softmax p and the answer y (rows at the given offsets). */
  setLastLayer(p: ArrayLike<number>, pOffset: number, y: ArrayLike<number>, yOffset: number): this {
    const { k } = this;
    let pp = 0;
    let py = 0;
    let yMy = 0;
    for (let i = 0; i < k; i++) {
      const pi = p[pOffset + i];
      const yi = y[yOffset + i];
      this.p[i] = pi;
      pp += pi * pi;
      py += pi * yi;
      yMy += (pi - yi) * (pi - yi);
    }
    for (let i = 0; i < k; i++) {
      const pi = this.p[i];
      // (p − e_i)·(p − y) and (p − e_i)·(p − e_i)
      this.my[i] = pp - py - pi + y[yOffset + i];
      this.diag[i] = pp - 2 * pi + 1;
    }
    this.pp = pp;
    this.yMy = yMy;
    this.matrixReady = false;
    this.fillMatrix = this.fillLastLayer;
    return this;
  }

  /** Geometry from an explicit Gram matrix (full-parameter Jacobian), rows at `gramOffset`. */
  setGram(gram: ArrayLike<number>, gramOffset: number, y: ArrayLike<number>, yOffset: number): this {
    const { k, full } = this;
    let yMy = 0;
    for (let i = 0; i < k; i++) {
      let acc = 0;
      for (let j = 0; j < k; j++) {
        // Symmetrise: Gram matrices from floating-point backward passes are symmetric only approximately.
        const value = 0.5 * (gram[gramOffset + i * k + j] + gram[gramOffset + j * k + i]);
        full[i * k + j] = value;
        acc += value * y[yOffset + j];
      }
      this.my[i] = acc;
      this.diag[i] = full[i * k + i];
      yMy += y[yOffset + i] * acc;
    }
    this.yMy = yMy;
    this.matrixReady = true;
    this.fillMatrix = () => {};
    return this;
  }

  /** M as a K×K row-major matrix. */
  matrix(): Float64Array {
    if (!this.matrixReady) {
      this.fillMatrix();
      this.matrixReady = true;
    }
    return this.full;
  }

  private fillLastLayer(): void {
    const { k, p, pp, full } = this;
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) full[i * k + j] = pp - p[i] - p[j] + (i === j ? 1 : 0);
    }
  }
}
