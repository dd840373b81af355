/** Running mean and variance (Welford), for normalising rewards whose scale is unknown in advance. */
export class RunningStats {
  private n = 0;
  private mean_ = 0;
  private m2 = 0;

  push(value: number): void {
    this.n += 1;
    const delta = value - this.mean_;
    this.mean_ += delta / this.n;
    this.m2 += delta * (value - this.mean_);
  }

  get count(): number {
    return this.n;
  }

  get mean(): number {
    return this.mean_;
  }

  get std(): number {
    return this.n > 1 ? Math.sqrt(this.m2 / (this.n - 1)) : 0;
  }

  /** (value − mean) / std over what was seen so far; 0 until the spread is known. */
  normalise(value: number): number {
    const std = this.std;
    return std > 1e-12 ? (value - this.mean_) / std : 0;
  }
}
