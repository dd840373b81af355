import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { ProbBatch } from '../../../src/defenses/index.js';
import { presetConfig } from '../../../src/eval/config.js';
import { adaptivePolicy, certaintyReward, lossReward, type KnockoffProbe } from '../../../src/eval/policies/adaptive.js';
import { GradientBandit } from '../../../src/eval/policies/gradient-bandit.js';
import { randomPolicy } from '../../../src/eval/policies/random.js';
import { RunningStats } from '../../../src/eval/policies/running-stats.js';
import { seededRandom } from '../../../src/eval/random.js';

describe('gradient bandit', () => {
  it('learns to prefer the arm that pays', () => {
    const bandit = new GradientBandit(4, 0.1);
    const random = seededRandom(3);
    const payoff = [0.1, 0.2, 0.9, 0.3];
    for (let step = 0; step < 2000; step++) {
      const arm = bandit.sample(random());
      bandit.update(arm, random() < payoff[arm] ? 1 : 0);
    }
    const pi = bandit.policy();
    assert.ok(pi[2] > 0.8, `π = ${Array.from(pi).map((p) => p.toFixed(2))}`);
  });

  it('one update moves the rewarded arm up and the others down, by the formula', () => {
    const bandit = new GradientBandit(3, 0.5);
    bandit.update(0, 0); // baseline now 0
    const before = bandit.policy();
    const h = Float64Array.from(bandit.preferences);
    bandit.update(1, 2);
    assert.ok(Math.abs(bandit.preferences[1] - (h[1] + 0.5 * 2 * (1 - before[1]))) < 1e-12);
    assert.ok(Math.abs(bandit.preferences[0] - (h[0] - 0.5 * 2 * before[0])) < 1e-12);
    assert.ok(Math.abs(bandit.preferences[2] - (h[2] - 0.5 * 2 * before[2])) < 1e-12);
    assert.equal(bandit.averageReward, 1);
  });

  it('π is a distribution over the available arms only', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: -20, max: 20, noNaN: true }), { minLength: 2, maxLength: 8 }), fc.integer({ min: 0, max: 7 }), (prefs, masked) => {
        const bandit = new GradientBandit(prefs.length, 0.1);
        bandit.preferences.set(prefs);
        const available = prefs.map((_, i) => i !== masked % prefs.length);
        const pi = bandit.policy(available);
        const sum = pi.reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(sum - 1) < 1e-9);
        assert.equal(pi[masked % prefs.length], 0);
        assert.notEqual(bandit.sample(0.999999, available), masked % prefs.length);
      }),
    );
  });

  it('rejects bad arguments', () => {
    assert.throws(() => new GradientBandit(0, 0.1), /at least one arm/);
    assert.throws(() => new GradientBandit(2, 0).update(0, 1), /learning rate/);
    assert.throws(() => new GradientBandit(2, 0.1).update(5, 1), /arm 5/);
    assert.throws(() => new GradientBandit(2, 0.1).policy([false, false]), /masked out/);
  });
});

describe('reward signals', () => {
  it('running statistics normalise to zero mean and unit spread', () => {
    const stats = new RunningStats();
    for (const v of [1, 2, 3, 4, 5]) stats.push(v);
    assert.equal(stats.mean, 3);
    assert.ok(Math.abs(stats.std - Math.sqrt(2.5)) < 1e-12);
    assert.ok(Math.abs(stats.normalise(3 + Math.sqrt(2.5)) - 1) < 1e-12);
    assert.equal(new RunningStats().normalise(7), 0);
  });

  it('certainty is the top-two margin, loss the cross-entropy under the knockoff', () => {
    assert.ok(Math.abs(certaintyReward([0.1, 0.7, 0.2], 0, 3) - 0.5) < 1e-12);
    assert.ok(Math.abs(lossReward([0, 1], 0, [0.5, 0.5], 0, 2) - Math.log(2)) < 1e-12);
    assert.ok(lossReward([1, 0], 0, [0, 1], 0, 2) < 20);
  });
});

function onehotAnswers(indices: Int32Array, labels: number[], cols: number, confident: (label: number) => boolean): ProbBatch {
  const data = new Float32Array(indices.length * cols);
  indices.forEach((index, r) => {
    const label = labels[index];
    if (confident(label)) data[r * cols + (label % cols)] = 1;
    else data.fill(1 / cols, r * cols, (r + 1) * cols);
  });
  return { rows: indices.length, cols, data };
}

describe('query policies', () => {
  const labels = Array.from({ length: 400 }, (_, i) => i % 4);
  const pool = { x: new Float32Array(0), rows: 400, features: 0, labels, classes: 4 };

  it('random: every image at most once, same order for the same seed', () => {
    const policy = randomPolicy(pool, 7);
    const seen = new Set<number>();
    for (;;) {
      const picks = policy.next(64);
      if (picks.length === 0) break;
      for (const i of picks) {
        assert.ok(!seen.has(i));
        seen.add(i);
      }
    }
    assert.equal(seen.size, 400);
    assert.deepEqual(randomPolicy(pool, 7).next(10), randomPolicy(pool, 7).next(10));
    assert.notDeepEqual(randomPolicy(pool, 7).next(10), randomPolicy(pool, 8).next(10));
  });

  it('adaptive: favours the class whose answers are certain, never repeats an image, and retrains on schedule', async () => {
    let retrains = 0;
    const probe: KnockoffProbe = { predict: () => undefined, retrain: async () => void retrains++ };
    const settings = {
      ...presetConfig('quick').adaptive,
      retrainEvery: 100,
      stepSize: 8,
      rewardWeights: { certainty: 1, diversity: 0, loss: 0 },
      learningRate: 0.2,
    };
    const policy = adaptivePolicy(pool, settings, 1, probe);
    const seen = new Set<number>();
    for (let step = 0; step < 30; step++) {
      const picks = policy.next(8);
      for (const i of picks) {
        assert.ok(!seen.has(i), `image ${i} picked twice`);
        seen.add(i);
      }
      await policy.observe(
        picks,
        onehotAnswers(picks, labels, 4, (label) => label === 3),
      );
    }
    assert.equal(retrains, 2);
    const pi = policy.bandit.policy();
    assert.ok(pi[3] > 0.5, `π = ${Array.from(pi).map((p) => p.toFixed(2))}`);
    assert.ok(policy.picks[3] > policy.picks[0]);
  });

  it('adaptive: keeps drawing from the other classes once one runs out', () => {
    const probe: KnockoffProbe = { predict: () => undefined, retrain: async () => {} };
    const policy = adaptivePolicy(pool, presetConfig('quick').adaptive, 2, probe);
    const all = policy.next(1000);
    assert.equal(all.length, 400);
    assert.equal(new Set(all).size, 400);
    assert.equal(policy.next(5).length, 0);
  });
});
