/**
 * The gradient bandit of the adaptive Knockoff policy: preferences H over arms (the attacker's
 * coarse classes), policy π = softmax(H), and after a reward r for arm z, with the running
 * baseline r̄ (mean of all rewards so far):
 *   H_z += lr·(r − r̄)·(1 − π_z),   H_j −= lr·(r − r̄)·π_j  for j ≠ z.
 * Arms may be masked out (a class whose images are all used); π is then taken over the rest.
 */
export class GradientBandit {
  readonly preferences: Float64Array;
  private baseline = 0;
  private rewards = 0;

  constructor(
    readonly arms: number,
    readonly learningRate: number,
  ) {
    if (!Number.isInteger(arms) || arms < 1) throw new RangeError(`a bandit needs at least one arm, got ${arms}`);
    if (!(learningRate > 0)) throw new RangeError(`the bandit's learning rate must be > 0, got ${learningRate}`);
    this.preferences = new Float64Array(arms);
  }

  /** π = softmax(H) over the available arms (all when no mask is given); 0 for masked arms. */
  policy(available?: ArrayLike<boolean>): Float64Array {
    const pi = new Float64Array(this.arms);
    let max = -Infinity;
    for (let a = 0; a < this.arms; a++) if ((!available || available[a]) && this.preferences[a] > max) max = this.preferences[a];
    if (max === -Infinity) throw new RangeError('every arm of the bandit is masked out');
    let sum = 0;
    for (let a = 0; a < this.arms; a++) {
      if (available && !available[a]) continue;
      pi[a] = Math.exp(this.preferences[a] - max);
      sum += pi[a];
    }
    for (let a = 0; a < this.arms; a++) pi[a] /= sum;
    return pi;
  }

  /** Draws an arm from π with a uniform number u in [0, 1). */
  sample(u: number, available?: ArrayLike<boolean>): number {
    const pi = this.policy(available);
    let cumulative = 0;
    let last = -1;
    for (let a = 0; a < this.arms; a++) {
      if (pi[a] <= 0) continue;
      last = a;
      cumulative += pi[a];
      if (u < cumulative) return a;
    }
    return last;
  }

  /** The running baseline r̄ (mean reward so far). */
  get averageReward(): number {
    return this.baseline;
  }

  /** One gradient step for a reward observed on `arm`, under the policy it was drawn from. */
  update(arm: number, reward: number, available?: ArrayLike<boolean>): void {
    if (!Number.isInteger(arm) || arm < 0 || arm >= this.arms) throw new RangeError(`arm ${arm} is not one of 0..${this.arms - 1}`);
    if (!Number.isFinite(reward)) throw new RangeError(`reward must be finite, got ${reward}`);
    const pi = this.policy(available);
    // The baseline before this reward, as in the standard gradient bandit.
    const advantage = reward - this.baseline;
    for (let a = 0; a < this.arms; a++) {
      if (available && !available[a]) continue;
      this.preferences[a] += a === arm ? this.learningRate * advantage * (1 - pi[a]) : -this.learningRate * advantage * pi[a];
    }
    this.rewards += 1;
    this.baseline += (reward - this.baseline) / this.rewards;
  }
}
