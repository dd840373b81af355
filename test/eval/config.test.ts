import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { scratchDir } from '../helpers/scratch.js';
import { defenseNames } from '../../src/defenses/index.js';
import { EvalConfigError, expandDefenses, loadConfigFile, presetConfig, validateConfig, withWorld } from '../../src/eval/config.js';
import { planRuns } from '../../src/eval/run/run-key.js';

describe('eval config', () => {
  it('quick and defenses presets: one budget, random policy, the calibrated attacker; quick trims the grid only', () => {
    const expected = {
      quick: ['none', 'mad', 'mad-argmax'],
      defenses: ['none', 'argmax', 'reverse-sigmoid', 'mad', 'mad-argmax', 'misinformation'],
    };
    for (const name of ['quick', 'defenses'] as const) {
      const preset = presetConfig(name);
      assert.equal(preset.name, name);
      assert.deepEqual(preset.policies, ['random']);
      assert.equal(preset.budgets.length, 1);
      assert.deepEqual(
        preset.defenses.map((d) => d.family),
        expected[name],
      );
      assert.equal(preset.world, 'open');
      // The calibrated attacker: a CNN knockoff for 15 epochs, several seeds; the worst case over soft and top-1.
      assert.deepEqual(preset.attackerLabels, ['soft', 'argmax']);
      assert.equal(preset.knockoffTraining.arch, 'cnn');
      assert.equal(preset.knockoffTraining.epochs, 15);
      assert.ok(preset.seeds >= 3);
    }
  });

  it('adaptive preset: every family at its ≤ 1 point setting against every attacker, 3 seeds, 10k queries', () => {
    const adaptive = presetConfig('adaptive');
    assert.equal(adaptive.name, 'adaptive');
    const families = adaptive.defenses.map((d) => d.family);
    for (const family of ['none', 'argmax', 'reverse-sigmoid', 'mad', 'mad-argmax', 'misinformation', 'noise']) assert.ok(families.includes(family), family);
    // The newer defenses join once registered (they are: src/defenses/spec/registry.ts).
    for (const family of ['modelguard-w', 'modelguard-s', 'grad2']) assert.equal(families.includes(family), defenseNames().includes(family), family);
    assert.deepEqual(
      adaptive.defenses
        .filter((d) => ['reverse-sigmoid', 'mad', 'mad-argmax', 'misinformation', 'noise'].includes(d.family))
        .map((d) => d.params.split(',')[0]),
      ['beta=0.5', 'eps=0.5', 'eps=1', 'tau=0.7', 'scale=1'],
      'the settings of the defenses table',
    );
    assert.deepEqual(adaptive.policies, ['random', 'smoothing', 'restorer', 'inversion', 'jbda', 'jbself', 'jbtop3', 'restorer-jbtop3']);
    assert.deepEqual(adaptive.attackerLabels, ['soft', 'argmax']);
    assert.deepEqual(adaptive.budgets, [10000]);
    assert.equal(adaptive.seeds, 3);
    assert.equal(adaptive.knockoffTraining.arch, 'cnn');
    // Inversion runs against reverse sigmoid only, the restorers against every defense but none.
    const plan = planRuns(adaptive);
    const runsOf = (policy: string) => new Set(plan.filter((r) => r.policy === policy).map((r) => r.defense.family));
    assert.deepEqual([...runsOf('inversion')], ['reverse-sigmoid']);
    assert.ok(!runsOf('restorer').has('none') && runsOf('restorer').size === adaptive.defenses.length - 1);
    assert.ok(!runsOf('restorer-jbtop3').has('none'));
    assert.equal(runsOf('smoothing').size, adaptive.defenses.length);
    const settings = adaptive.defenses.length;
    assert.equal(plan.length, 3 * (settings * 5 + (settings - 1) * 2 + 1));
    // A config file may start from it and trim it.
    const trimmed = validateConfig({
      preset: 'adaptive',
      defenses: ['none', 'noise:scale=1'],
      policies: ['random', 'smoothing'],
      smoothing: { copies: 5, shift: 0 },
    });
    assert.deepEqual(trimmed.smoothing, { copies: 5, shift: 0, noise: 0.02, flip: 'auto' });
  });

  it('paper preset: sweeps per family, all budgets, both policies', () => {
    const paper = presetConfig('paper');
    assert.deepEqual(paper.policies, ['random', 'adaptive']);
    assert.deepEqual(paper.budgets, [1000, 5000, 10000, 20000, 50000]);
    const madArgmax = paper.defenses.filter((d) => d.family === 'mad-argmax');
    assert.ok(madArgmax.length >= 4);
    assert.ok(madArgmax.every((d) => d.spec.includes('oracle=argmax')));
    assert.ok(paper.defenses.filter((d) => d.family === 'reverse-sigmoid').length >= 5);
  });

  it('expands list-valued parameters into one setting per value, with canonical specs', () => {
    const settings = expandDefenses([{ name: 'mad', eps: [0.1, 0.5], norm: 'l1' }, 'mad-argmax:eps=1', 'rounding:decimals=2|argmax']);
    assert.deepEqual(
      settings.map((s) => s.spec),
      [
        'mad:eps=0.1,norm=l1,oracle=extreme,jacobian=last-layer',
        'mad:eps=0.5,norm=l1,oracle=extreme,jacobian=last-layer',
        'mad:eps=1,norm=l1,oracle=argmax,jacobian=last-layer',
        'rounding:decimals=2|argmax',
      ],
    );
    assert.deepEqual(
      settings.map((s) => s.family),
      ['mad', 'mad', 'mad-argmax', 'rounding|argmax'],
    );
    assert.equal(settings[0].params, 'eps=0.1,norm=l1,oracle=extreme,jacobian=last-layer');
  });

  it('names the bad field in its errors', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ preset: 'quick', victim: 'cifar' }, /victim must be one of "mnist", "fashion-mnist"/],
      [{ preset: 'quick', budgets: [100, -5] }, /budgets\[1\] must be a positive integer/],
      [{ preset: 'quick', defenses: ['mad:eps=9'] }, /defenses\[0\]: mad: eps=9 exceeds/],
      [{ preset: 'quick', defenses: [{ name: 'mad', eps: [] }] }, /defenses\[0\]\.eps is an empty list/],
      [{ preset: 'quick', defenses: ['bogus'] }, /defenses\[0\]: unknown defense "bogus"/],
      [{ preset: 'quick', defenses: ['none', 'none'] }, /appears twice/],
      [{ preset: 'quick', polices: ['random'] }, /unknown config field "polices"/],
      [{ preset: 'quick', knockoffTraining: { epochs: 0 } }, /knockoffTraining\.epochs must be a positive integer/],
      [{ preset: 'quick', knockoffTraining: { epoch: 3 } }, /unknown field "knockoffTraining\.epoch"/],
      [{ preset: 'quick', policies: ['greedy'] }, /policies\[0\] must be one of "random", "adaptive"/],
      [{ preset: 'nope' }, /preset must be one of "quick", "defenses", "adaptive", "paper", "ablation"/],
      [{ preset: 'quick', smoothing: { copies: 1 } }, /smoothing\.copies must be at least 2/],
      [{ preset: 'quick', smoothing: { flip: 'sometimes' } }, /smoothing\.flip must be true, false or "auto"/],
      [{ preset: 'quick', restorer: { shadowFraction: 1 } }, /restorer\.shadowFraction must be in \(0, 1\)/],
      [{ preset: 'quick', restorer: { temperatures: [] } }, /restorer\.temperatures must be a non-empty list/],
      [{ preset: 'quick', restorer: { hiden: 3 } }, /unknown field "restorer\.hiden"/],
      [{ defenses: ['none'], budgets: [10] }, /"policies" is required/],
      [{ preset: 'quick', world: 'closed', closedWorldPool: 500 }, /budget 10000 exceeds the closed-world pool/],
      [{ preset: 'quick', adaptive: { rewardWeights: { certainty: 0, diversity: 0, loss: 0 } } }, /all 0/],
      [{ preset: 'quick', name: '../x' }, /name must hold only/],
    ];
    for (const [raw, pattern] of cases) {
      assert.throws(
        () => validateConfig(raw),
        (error: unknown) => error instanceof EvalConfigError && pattern.test(error.message),
        JSON.stringify(raw),
      );
    }
  });

  it('a config file starts from a preset and replaces the fields it sets', async () => {
    const dir = await scratchDir('msd-config-');
    const file = join(dir, 'my-grid.json');
    await writeFile(file, JSON.stringify({ preset: 'quick', budgets: [5000, 1000], defenses: ['none', { name: 'noise', scale: [1, 2] }] }));
    const config = await loadConfigFile(file);
    assert.equal(config.name, 'my-grid');
    assert.deepEqual(config.budgets, [1000, 5000]);
    assert.equal(config.defenses.length, 3);
    assert.deepEqual(config.policies, ['random']);
    await writeFile(file, '{ not json');
    await assert.rejects(loadConfigFile(file), /not valid JSON/);
    await assert.rejects(loadConfigFile(join(dir, 'missing.json')), /cannot read config file/);
  });

  it('switching to the closed world checks the budgets against the held-out pool', () => {
    const quick = presetConfig('quick');
    assert.equal(withWorld(quick, 'closed').world, 'closed');
    assert.throws(() => withWorld({ ...quick, closedWorldPool: 100 }, 'closed'), /exceeds the closed-world pool/);
  });

  it('every example grid in examples/ loads (docs/measurements/evaluation-results.md runs them)', async () => {
    const folder = fileURLToPath(new URL('../../examples/', import.meta.url));
    const files = (await readdir(folder)).filter((name) => /^eval-.*\.json$/.test(name));
    assert.ok(files.length >= 4, files.join(', '));
    for (const name of files) {
      const config = await loadConfigFile(join(folder, name));
      assert.equal(config.name, JSON.parse(await readFile(join(folder, name), 'utf8')).name ?? name.replace(/\.json$/, ''), name);
    }
  });
});
