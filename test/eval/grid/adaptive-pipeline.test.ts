import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { scratchDir } from '../../helpers/scratch.js';
import { validateConfig } from '../../../src/eval/config.js';
import { evaluate } from '../../../src/eval/grid/evaluate.js';
import { summaryText } from '../../../src/eval/report/summary.js';
import { parseCsv, REPORT_COLUMNS } from '../../../src/eval/report/table.js';
import { tf } from '../../../src/models/index.js';
import { syntheticLoader } from '../helpers/synthetic-data.js';

describe('the adaptive attackers in the grid, through the HTTP middleware', () => {
  it('runs each family where it applies, stores what it recovered, and reports the worst case', async () => {
    const config = validateConfig({
      name: 'tiny-adaptive',
      world: 'closed',
      closedWorldPool: 300,
      defenses: ['none', 'reverse-sigmoid:beta=0.5,gamma=0.2'],
      policies: ['random', 'smoothing', 'restorer', 'inversion'],
      budgets: [150],
      attackerLabels: ['soft', 'argmax'],
      victimTraining: { epochs: 1, batchSize: 32 },
      knockoffTraining: { arch: 'mlp', epochs: 2, batchSize: 32 },
      smoothing: { copies: 3 },
      restorer: { pairs: 400, epochs: 2, shadowEpochs: 1 },
    });
    const lines: string[] = [];
    const tensorsBefore = tf.memory().numTensors;
    const result = await evaluate({
      config,
      outDir: await scratchDir('msd-eval-adaptive-'),
      cacheDir: await scratchDir('msd-cache-'),
      loadDataset: syntheticLoader({ train: 900, test: 300 }),
      log: (l) => lines.push(l),
    });
    assert.equal(tf.memory().numTensors - tensorsBefore, 0, 'tensors leaked');
    // Against no defense: nothing to restore, nothing to invert.
    assert.deepEqual(
      result.records.map((r) => `${r.defense}/${r.policy}`),
      ['none/random', 'none/smoothing', 'reverse-sigmoid/random', 'reverse-sigmoid/smoothing', 'reverse-sigmoid/restorer', 'reverse-sigmoid/inversion'],
    );
    assert.ok(
      lines.some((l) => /not run: .*restorer: nothing to restore against none.*inversion: none has no closed-form inverse/.test(l)),
      lines.join('\n'),
    );
    const record = (defense: string, policy: string) => result.records.find((r) => r.defense === defense && r.policy === policy)!;
    for (const r of result.records) {
      assert.equal(r.queries, 150, `${r.defense}/${r.policy} spends the budget`);
      assert.ok(r.answerQuality, `${r.defense}/${r.policy} measured against the clean answers`);
      assert.equal(r.attackers.length, 2);
    }
    assert.equal(record('none', 'random').answerQuality!.rawL1 < 1e-4, true);
    assert.equal(record('reverse-sigmoid', 'smoothing').answerQuality!.rows, 50, '150 queries at 3 per image');
    const inversion = record('reverse-sigmoid', 'inversion').answerQuality!;
    assert.ok(inversion.usedL1 < inversion.rawL1, `inversion L1 ${inversion.rawL1} → ${inversion.usedL1}`);
    const restorer = record('reverse-sigmoid', 'restorer');
    assert.ok(restorer.restorer && restorer.restorer.shadowQueries === 30 && restorer.restorer.heldOut > 0, JSON.stringify(restorer.restorer));
    // Paired seeds: the inversion attacker queried the plain attacker's images.
    assert.equal(record('reverse-sigmoid', 'inversion').answerQuality!.rawL1.toFixed(6), record('reverse-sigmoid', 'random').answerQuality!.rawL1.toFixed(6));

    const csv = parseCsv(await readFile(result.files.csv, 'utf8'));
    assert.deepEqual(csv[0], [...REPORT_COLUMNS]);
    assert.equal(csv.length, 1 + 6 * 2);
    const column = (name: (typeof REPORT_COLUMNS)[number]) => REPORT_COLUMNS.indexOf(name);
    assert.deepEqual(
      new Set(csv.slice(1).map((r) => r[column('attacker_name')])),
      new Set(['knockoff-random', 'top-1', 'smoothing', 'smoothing top-1', 'restorer', 'restorer top-1', 'inversion', 'inversion top-1']),
    );
    for (const row of csv.slice(1))
      assert.ok(
        row[column('worst_case_attacker')] !== '' && Number(row[column('worst_case_accuracy')]) >= Number(row[column('attacker_accuracy')]) - 1e-9,
        row.join(','),
      );
    const html = await readFile(result.files.html, 'utf8');
    assert.match(html, /What does the best attacker still get\? The worst case over 8 attackers, 150 queries/);
    assert.match(html, /What the adaptive attackers recovered/);
    assert.match(summaryText(result.records), /Ranking on the worst case/);
  });
});
