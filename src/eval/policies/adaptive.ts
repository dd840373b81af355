/**
 * The adaptive Knockoff policy: a gradient bandit over the attacker's coarse classes. Each pick
 * draws a class from π = softmax(H) and an unused image of that class; each answer earns a reward
 * from three signals, each normalised by its running mean and spread, then weighted:
 *   certainty = ŷ(1) − ŷ(2)                       (confident answers teach the most)
 *   diversity = ‖ŷ − mean of the recent answers‖₂ (answers unlike recent ones)
 *   loss      = CE(ŷ, F_A(x))                      (answers the current knockoff gets wrong)
 * The knockoff behind the loss reward is retrained every `retrainEvery` queries through the probe.
 */
import type { ProbBatch } from '../../defenses/index.js';
import type { AdaptiveSettings } from '../config.js';
import { permutation, seededRandom } from '../random.js';
import { GradientBandit } from './gradient-bandit.js';
import { RunningStats } from './running-stats.js';
import type { AttackerPool, QueryPolicy } from './types.js';

/** The attacker's current knockoff, as the policy sees it. */
export interface KnockoffProbe {
  /** The knockoff's softmax on pool images; undefined while there is no knockoff yet. */
  predict(indices: Int32Array): ProbBatch | undefined;
  /** Retrains the knockoff on everything answered so far. */
  retrain(): Promise<void>;
}

export interface RewardParts {
  certainty: number;
  diversity: number;
  /** undefined while there is no knockoff to measure a loss against. */
  loss: number | undefined;
}

export interface AdaptivePolicy extends QueryPolicy {
  readonly bandit: GradientBandit;
  /** How often each class was picked so far. */
  readonly picks: Int32Array;
}

/** Certainty of one answer row: the margin between its two largest probabilities. */
export function certaintyReward(data: ArrayLike<number>, offset: number, cols: number): number {
  let first = -Infinity;
  let second = -Infinity;
  for (let c = 0; c < cols; c++) {
    const v = data[offset + c];
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) second = v;
  }
  return cols < 2 ? first : first - second;
}

/** Cross-entropy −Σ ŷ_k log q_k of the answer ŷ under the knockoff's q (q clipped away from 0). */
export function lossReward(answer: ArrayLike<number>, answerOffset: number, knockoff: ArrayLike<number>, knockoffOffset: number, cols: number): number {
  let ce = 0;
  for (let c = 0; c < cols; c++) {
    const y = answer[answerOffset + c];
    if (y > 0) ce -= y * Math.log(Math.max(knockoff[knockoffOffset + c], 1e-7));
  }
  return ce;
}

/** The mean of the last `window` answers, kept as a running sum over a ring buffer. */
class RecentAnswers {
  private readonly ring: Float64Array;
  private readonly sum: Float64Array;
  private size = 0;
  private head = 0;

  constructor(
    private readonly window: number,
    private readonly cols: number,
  ) {
    this.ring = new Float64Array(window * cols);
    this.sum = new Float64Array(cols);
  }

  /** ‖row − mean‖₂ against the answers before it; 0 when there are none yet. */
  distance(data: ArrayLike<number>, offset: number): number {
    if (this.size === 0) return 0;
    let acc = 0;
    for (let c = 0; c < this.cols; c++) {
      const d = data[offset + c] - this.sum[c] / this.size;
      acc += d * d;
    }
    return Math.sqrt(acc);
  }

  push(data: ArrayLike<number>, offset: number): void {
    const slot = this.head * this.cols;
    if (this.size === this.window) for (let c = 0; c < this.cols; c++) this.sum[c] -= this.ring[slot + c];
    else this.size += 1;
    for (let c = 0; c < this.cols; c++) {
      this.ring[slot + c] = data[offset + c];
      this.sum[c] += data[offset + c];
    }
    this.head = (this.head + 1) % this.window;
  }
}

export function adaptivePolicy(pool: AttackerPool, settings: AdaptiveSettings, seed: number, probe: KnockoffProbe): AdaptivePolicy {
  const random = seededRandom(seed);
  const { classes } = pool;
  // Per class, its images in a seeded random order; a cursor marks the unused ones.
  const members: number[][] = Array.from({ length: classes }, () => []);
  const order = permutation(pool.rows, random);
  for (const index of order) {
    const label = pool.labels[index];
    if (!Number.isInteger(label) || label < 0 || label >= classes)
      throw new RangeError(`pool image ${index} has coarse label ${label}, expected 0..${classes - 1}`);
    members[label].push(index);
  }
  const cursors = new Int32Array(classes);
  const available = members.map((m) => m.length > 0);
  const bandit = new GradientBandit(classes, settings.learningRate);
  const picks = new Int32Array(classes);
  const stats = { certainty: new RunningStats(), diversity: new RunningStats(), loss: new RunningStats() };
  const weights = settings.rewardWeights;
  let recent: RecentAnswers | undefined;
  let sinceRetrain = 0;
  // The class each picked index was drawn from, until its answer comes back.
  const drawnFrom = new Map<number, number>();

  return {
    bandit,
    picks,
    preferredBatch: settings.stepSize,
    next(max) {
      const out: number[] = [];
      while (out.length < max && available.some(Boolean)) {
        const arm = bandit.sample(random(), available);
        const index = members[arm][cursors[arm]++];
        if (cursors[arm] >= members[arm].length) available[arm] = false;
        picks[arm] += 1;
        drawnFrom.set(index, arm);
        out.push(index);
      }
      return Int32Array.from(out);
    },
    async observe(indices, answers) {
      if (answers.rows !== indices.length) throw new RangeError(`got ${answers.rows} answers for ${indices.length} queries`);
      recent ??= new RecentAnswers(settings.diversityWindow, answers.cols);
      const knockoff = probe.predict(indices);
      const { cols, data } = answers;
      for (let r = 0; r < indices.length; r++) {
        const o = r * cols;
        const parts: RewardParts = {
          certainty: certaintyReward(data, o, cols),
          diversity: recent.distance(data, o),
          loss: knockoff ? lossReward(data, o, knockoff.data, o, cols) : undefined,
        };
        recent.push(data, o);
        stats.certainty.push(parts.certainty);
        stats.diversity.push(parts.diversity);
        let reward = weights.certainty * stats.certainty.normalise(parts.certainty) + weights.diversity * stats.diversity.normalise(parts.diversity);
        if (parts.loss !== undefined) {
          stats.loss.push(parts.loss);
          reward += weights.loss * stats.loss.normalise(parts.loss);
        }
        const arm = drawnFrom.get(indices[r]);
        if (arm === undefined) throw new RangeError(`pool image ${indices[r]} was not picked by this policy`);
        drawnFrom.delete(indices[r]);
        // Exhausted classes stay in the update: the reward still says how good the class was.
        bandit.update(arm, reward);
      }
      sinceRetrain += indices.length;
      if (sinceRetrain >= settings.retrainEvery) {
        sinceRetrain = 0;
        await probe.retrain();
      }
    },
  };
}
