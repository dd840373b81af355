import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { scratchDir } from '../../helpers/scratch.js';
import type { Defense, ProbBatch } from '../../../src/defenses/index.js';
import { describeDefense, validateConfig } from '../../../src/eval/config.js';
import { evaluate } from '../../../src/eval/grid/evaluate.js';
import { parseCsv, REPORT_COLUMNS } from '../../../src/eval/report/table.js';
import { loadDataset } from '../../../src/eval/world/datasets.js';
import type { DatasetLoader } from '../../../src/eval/world/world.js';
import { tf } from '../../../src/models/tfjs/tf.js';
import { syntheticLoader } from '../helpers/synthetic-data.js';

/** Answers 1/K for every class: nothing to learn from. */
const uniform: Defense = {
  name: 'uniform',
  spec: 'uniform',
  needs: [],
  keepsTop1: false,
  apply(batch: ProbBatch): ProbBatch {
    return { rows: batch.rows, cols: batch.cols, data: new Float32Array(batch.rows * batch.cols).fill(1 / batch.cols) };
  },
};

function tinyConfig(defenses: string[], extra: Record<string, unknown> = {}) {
  return validateConfig({
    name: 'tiny',
    world: 'closed',
    closedWorldPool: 300,
    defenses,
    policies: ['random'],
    budgets: [300],
    victimTraining: { epochs: 1, batchSize: 32 },
    knockoffTraining: { epochs: 1, batchSize: 32 },
    ...extra,
  });
}

describe('evaluation pipeline on a tiny slice', () => {
  it('runs end to end through the HTTP middleware, writes the report, and resumes without rerunning', async () => {
    const outDir = await scratchDir('msd-eval-');
    const cacheDir = await scratchDir('msd-cache-');
    const loader = syntheticLoader({ train: 900, test: 300 });
    const config = tinyConfig(['none', 'mad:eps=0.5']);
    config.defenses.push({ ...describeDefense(uniform), defense: uniform });
    const tensorsBefore = tf.memory().numTensors;
    const first = await evaluate({ config, outDir, cacheDir, loadDataset: loader });
    assert.equal(tf.memory().numTensors - tensorsBefore, 0, 'tensors leaked');
    assert.equal(first.ran, 3);
    assert.equal(first.records.length, 3);

    const byDefense = new Map(first.records.map((r) => [r.defense, r]));
    const chance = 1 / 10;
    const none = byDefense.get('none')!;
    assert.ok(none.victimAccuracy > 0.6, `victim ${none.victimAccuracy}`);
    for (const attacker of none.attackers) assert.ok(attacker.accuracy > chance + 0.25, `undefended ${attacker.labels} attacker ${attacker.accuracy}`);
    // Not exactly 0: the endpoint's forward pass runs in other chunk sizes than the local one.
    assert.ok(none.defender.l1Mean < 1e-5, `undefended L1 ${none.defender.l1Mean}`);
    assert.equal(none.defender.top1ChangeRate, 0);
    assert.equal(none.queries, 300);
    assert.equal(none.requests, Math.ceil(300 / config.requestRows));
    const uniformRun = byDefense.get('uniform')!;
    for (const attacker of uniformRun.attackers)
      assert.ok(attacker.accuracy < chance + 0.12, `uniform-defended ${attacker.labels} attacker ${attacker.accuracy}`);
    assert.ok(uniformRun.defender.accuracy < 0.3);
    const mad = byDefense.get('mad')!;
    assert.ok(Math.abs(mad.defender.l1Mean - 0.5) < 0.01, `MAD L1 ${mad.defender.l1Mean}`);

    // The serving layer's gauges hold the measured figures.
    const metrics = await first.registry.metrics();
    assert.match(metrics, /msd_attacker_accuracy_ratio\{defense="none"\} [\d.]+/);
    assert.match(metrics, /msd_utility_loss_ratio\{defense="uniform"\} 0\.\d+/);
    // And the worst case beside the soft Knockoff attacker: the strongest of the soft and top-1 attackers.
    const strongest = Math.max(...none.attackers.map((a) => a.accuracy));
    const worst = metrics.match(/msd_worst_case_attacker_accuracy_ratio\{defense="none",attacker="([^"]+)"\} ([\d.e-]+)/);
    assert.ok(worst, metrics);
    assert.ok(Math.abs(Number(worst[2]) - strongest) < 1e-9, `worst case ${worst[2]}, strongest ${strongest}`);

    for (const file of [first.files.json, first.files.csv, first.files.html, ...first.files.plots]) assert.ok((await stat(file)).size > 0, file);
    const csv = parseCsv(await readFile(first.files.csv, 'utf8'));
    assert.deepEqual(csv[0], [...REPORT_COLUMNS]);
    assert.equal(csv.length, 1 + 3 * 2);
    // One seed: no interval to show; every other cell is filled.
    const optional = new Set<string>([
      'params',
      'attacker_accuracy_ci95',
      'attacker_agreement_ci95',
      'worst_case_ci95',
      'restorer_l1_defended',
      'restorer_l1_restored',
    ]);
    for (const row of csv.slice(1))
      assert.ok(
        row.every((cell, i) => cell !== '' || optional.has(REPORT_COLUMNS[i])),
        row.join(','),
      );
    for (const row of csv.slice(1)) assert.equal(row[REPORT_COLUMNS.indexOf('knockoff_arch')], config.knockoffTraining.arch);

    // A restart finds every run finished: nothing is loaded or trained again.
    const failingLoader = async () => {
      throw new Error('the data should not be loaded again');
    };
    const second = await evaluate({ config, outDir, cacheDir, loadDataset: failingLoader });
    assert.equal(second.ran, 0);
    assert.equal(second.skipped, 3);
    assert.deepEqual(
      second.records.map((r) => r.key),
      first.records.map((r) => r.key),
    );

    // A grown grid runs only the new setting; the victim comes from the cache.
    const grown = tinyConfig(['none', 'mad:eps=0.5', 'argmax']);
    grown.defenses.push(config.defenses[2]);

    // --report-only: the report of the finished runs, nothing loaded or run, and it says it is partial.
    const reportLines: string[] = [];
    const partial = await evaluate({ config: grown, outDir, cacheDir, loadDataset: failingLoader, reportOnly: true, log: (l) => reportLines.push(l) });
    assert.equal(partial.ran, 0);
    assert.equal(partial.planned, 4);
    assert.deepEqual(partial.records.map((r) => r.defense).sort(), ['mad', 'none', 'uniform']);
    assert.ok(
      reportLines.some((l) => /report only: 1 of 4 runs not finished/.test(l)),
      reportLines.join('\n'),
    );
    const partialJson = JSON.parse(await readFile(partial.files.json, 'utf8'));
    assert.ok(partialJson.notes.includes('partial: 3 of 4 runs finished; 1 not run yet'), JSON.stringify(partialJson.notes));
    assert.match(await readFile(partial.files.html, 'utf8'), /partial: 3 of 4 runs finished; 1 not run yet/);
    const lines: string[] = [];
    const third = await evaluate({ config: grown, outDir, cacheDir, loadDataset: loader, log: (l) => lines.push(l) });
    assert.equal(third.ran, 1);
    assert.equal(third.records.length, 4);
    assert.doesNotMatch(await readFile(third.files.html, 'utf8'), /partial:/, 'a whole grid’s report is not marked partial');
    assert.ok(
      lines.some((l) => /victim: loaded from/.test(l)),
      lines.join('\n'),
    );
  });

  it('on a real MNIST slice: the undefended attacker beats chance, a uniform answer leaves it near chance', async () => {
    // The first rows of each split only (a few hundred images), one epoch of training each.
    const loader: DatasetLoader = (name) => loadDataset(name, { limit: { train: 1400, test: 400 } });
    const config = tinyConfig(['none'], {
      closedWorldPool: 400,
      budgets: [400],
      victimTraining: { epochs: 2, batchSize: 16 },
      knockoffTraining: { epochs: 1, batchSize: 16 },
    });
    config.defenses.push({ ...describeDefense(uniform), defense: uniform });
    const outDir = await scratchDir('msd-eval-mnist-');
    const result = await evaluate({ config, outDir, cacheDir: await scratchDir('msd-cache-'), loadDataset: loader });
    const [none, uniformRun] = result.records;
    assert.ok(none.victimAccuracy > 0.7, `victim ${none.victimAccuracy}`);
    for (const attacker of none.attackers) assert.ok(attacker.accuracy > 0.35, `undefended ${attacker.labels} attacker ${attacker.accuracy}`);
    for (const attacker of uniformRun.attackers) assert.ok(attacker.accuracy < 0.22, `uniform-defended ${attacker.labels} attacker ${attacker.accuracy}`);
    const csv = parseCsv(await readFile(result.files.csv, 'utf8'));
    assert.deepEqual(csv[0], [...REPORT_COLUMNS]);
    assert.equal(csv.length, 1 + 2 * 2);
  });
});
