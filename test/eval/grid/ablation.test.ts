import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { expandDefenses, presetConfig, validateConfig } from '../../../src/eval/config.js';
import { evaluate } from '../../../src/eval/grid/evaluate.js';
import { parseCsv, REPORT_COLUMNS } from '../../../src/eval/report/table.js';
import { createSurrogate } from '../../../src/eval/run/surrogate-kinds.js';
import { initBackend, tf } from '../../../src/models/index.js';
import { syntheticLoader } from '../helpers/synthetic-data.js';

const parameterCount = (s: ReturnType<typeof createSurrogate>) => s.model.countParams();

describe('MAD surrogate ablation', () => {
  before(() => initBackend({ log: () => {} }));

  it('expands one MAD setting into one setting per surrogate kind, each its own curve and spec', () => {
    const settings = expandDefenses(['none', { name: 'mad', eps: 0.5, surrogate: ['victim-arch', 'small', 'uniform'] }]);
    assert.equal(settings.length, 4);
    assert.deepEqual(
      settings.map((s) => s.surrogate),
      [undefined, 'victim-arch', 'small', 'uniform'],
    );
    assert.deepEqual(
      settings.slice(1).map((s) => s.family),
      ['mad/victim-arch-surrogate', 'mad/small-surrogate', 'mad/uniform-surrogate'],
    );
    assert.equal(new Set(settings.map((s) => s.spec)).size, 4);
    assert.ok(settings.slice(1).every((s) => s.defense?.spec.startsWith('mad:') && /surrogate=/.test(s.params)));
    assert.throws(() => expandDefenses([{ name: 'rounding', decimals: 1, surrogate: 'small' }]), /uses no surrogate/);
    assert.throws(() => expandDefenses([{ name: 'mad', eps: 0.5, surrogate: 'trained' }]), /surrogate.*victim-arch/);
    assert.equal(presetConfig('ablation').defenses.filter((s) => s.surrogate).length, 3);
  });

  it('surrogates: the uniform one answers 1/K, the small one is smaller, all seeded', () => {
    const shape = { arch: 'mlp' as const, features: 16, classes: 5, seed: 3 };
    const x = Float32Array.from({ length: 4 * 16 }, (_, i) => (i % 7) / 7);
    const tensorsBefore = tf.memory().numTensors;
    const [victimArch, small, uniform, again] = [
      createSurrogate('victim-arch', shape),
      createSurrogate('small', shape),
      createSurrogate('uniform', shape),
      createSurrogate('small', shape),
    ];
    try {
      assert.ok(uniform.probs(x, 4).data.every((p) => Math.abs(p - 0.2) < 1e-7));
      assert.ok(parameterCount(small) < parameterCount(victimArch) / 4);
      assert.ok(!small.probs(x, 4).data.every((p) => Math.abs(p - 0.2) < 1e-4));
      assert.deepEqual(small.probs(x, 4).data, again.probs(x, 4).data);
    } finally {
      [victimArch, small, uniform, again].forEach((s) => s.dispose());
    }
    assert.equal(tf.memory().numTensors, tensorsBefore);
  });

  it('runs end to end: surrogate kinds and a Jacobian-based attacker in one grid, with the attacker column', async (t) => {
    const outDir = await mkdtemp(join(tmpdir(), 'msd-ablation-'));
    const cacheDir = await mkdtemp(join(tmpdir(), 'msd-ablation-cache-'));
    t.after(() => Promise.all([rm(outDir, { recursive: true, force: true }), rm(cacheDir, { recursive: true, force: true })]));
    const config = validateConfig({
      name: 'tiny-ablation',
      world: 'closed',
      closedWorldPool: 300,
      defenses: [{ name: 'mad', eps: 0.5, surrogate: ['small', 'uniform'] }],
      policies: ['random', 'jbself'],
      budgets: [250],
      attackerLabels: ['soft'],
      victimTraining: { epochs: 1, batchSize: 32 },
      knockoffTraining: { epochs: 1, batchSize: 32 },
      jbda: { roundEpochs: 1, seedSize: 50 },
    });
    const tensorsBefore = tf.memory().numTensors;
    const lines: string[] = [];
    const result = await evaluate({ config, outDir, cacheDir, loadDataset: syntheticLoader({ train: 900, test: 200 }), log: (l) => lines.push(l) });
    assert.equal(tf.memory().numTensors - tensorsBefore, 0, 'tensors leaked');
    assert.equal(result.records.length, 4);
    assert.deepEqual(
      result.records.map((r) => r.attacker),
      ['knockoff-random', 'jbself', 'knockoff-random', 'jbself'],
    );
    assert.ok(result.records.every((r) => r.queries === 250));
    assert.ok(
      lines.some((l) => /surrogate uniform: [\d.]+ µs per row/.test(l)),
      lines.join('\n'),
    );
    // A uniform p leaves MAD a different target than a random network's p: the answers differ.
    const [small, uniform] = [result.records[0], result.records[2]];
    assert.notEqual(small.defender.l1Mean, 0);
    assert.notEqual(small.key, uniform.key);
    const csv = parseCsv(await readFile(result.files.csv, 'utf8'));
    assert.deepEqual(csv[0], [...REPORT_COLUMNS]);
    const column = REPORT_COLUMNS.indexOf('attacker');
    assert.deepEqual(
      csv.slice(1).map((row) => row[column]),
      ['knockoff-random', 'jbself', 'knockoff-random', 'jbself'],
    );
  });
});
