import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { presetConfig, validateConfig } from '../../../src/eval/config.js';
import { planRuns, runKey } from '../../../src/eval/run/run-key.js';
import { stableJson } from '../../../src/eval/stable-json.js';

describe('run keys', () => {
  const config = validateConfig({ preset: 'quick', defenses: ['none', 'mad:eps=0.5'], budgets: [1000, 2000], policies: ['random', 'adaptive'] });

  it('plans defense × policy × budget × attacker-seed runs, each with its own key', () => {
    const runs = planRuns(config);
    assert.equal(config.seeds, 3);
    assert.equal(runs.length, 2 * 2 * 2 * 3);
    const keys = runs.map((run) => runKey(config, run));
    assert.equal(new Set(keys).size, keys.length);
    assert.match(keys[0], /^none-random-1000-[0-9a-f]{16}$/);
    assert.match(keys[1], /^none-random-1000-s1-[0-9a-f]{16}$/);
    // Only the attacker seed differs between the seeded runs of a setting.
    assert.deepEqual(
      runs.slice(0, 3).map((r) => r.attackerSeed),
      [0, 1, 2],
    );
  });

  it('is stable for the same settings and changes with anything that changes the outcome', () => {
    const run = planRuns(config)[3];
    assert.equal(
      runKey(config, run),
      runKey(validateConfig({ preset: 'quick', defenses: ['none', 'mad:eps=0.5'], budgets: [2000, 1000], policies: ['random', 'adaptive'] }), run),
    );
    const changed = [
      { ...config, seed: 2 },
      { ...config, world: 'closed' as const },
      { ...config, victim: 'fashion-mnist' as const },
      { ...config, knockoffTraining: { ...config.knockoffTraining, epochs: 9 } },
      { ...config, limits: { victimTrain: 100 } },
    ];
    for (const other of changed) assert.notEqual(runKey(other, run), runKey(config, run));
    // Adaptive settings matter only to adaptive runs.
    const randomRun = planRuns(config).find((r) => r.policy === 'random')!;
    assert.equal(runKey({ ...config, adaptive: { ...config.adaptive, retrainEvery: 7 } }, randomRun), runKey(config, randomRun));
  });

  it('stableJson sorts keys at every level', () => {
    assert.equal(stableJson({ b: 1, a: { d: [1, { z: 0, y: 1 }], c: undefined } }), '{"a":{"d":[1,{"y":1,"z":0}]},"b":1}');
  });

  it('the quick preset plans one run per defense and attacker seed', () => {
    const quick = presetConfig('quick');
    assert.equal(planRuns(quick).length, quick.defenses.length * quick.seeds);
  });
});
