import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { scratchDir } from '../../helpers/scratch.js';
import type { RunRecord } from '../../../src/eval/records/run-record.js';
import { adaptiveAgainstRandom, bestWithinUtility } from '../../../src/eval/report/selection.js';
import { aggregateRuns } from '../../../src/eval/report/aggregate.js';
import { summaryText } from '../../../src/eval/report/summary.js';
import { lineChart, niceTicks } from '../../../src/eval/report/svg-chart.js';
import { parseCsv, REPORT_COLUMNS, toCsv, reportRows } from '../../../src/eval/report/table.js';
import { writeReport } from '../../../src/eval/report/write.js';
import { sampleRecord } from '../helpers/sample-record.js';

function record(
  defense: string,
  params: string,
  policy: 'random' | 'adaptive',
  budget: number,
  loss: number,
  l1: number,
  soft: number,
  argmax: number,
): RunRecord {
  return sampleRecord(`${defense}-${params}-${policy}-${budget}`, {
    defense,
    params,
    spec: params ? `${defense}:${params}` : defense,
    policy,
    budget,
    defender: { accuracy: 0.97 - loss, accuracyLoss: loss, l1Mean: l1, l1Median: l1, top1ChangeRate: loss },
    attackers: [
      { labels: 'soft', accuracy: soft, agreement: soft + 0.01 },
      { labels: 'argmax', accuracy: argmax, agreement: argmax + 0.01 },
    ],
  });
}

const grid: RunRecord[] = [];
for (const policy of ['random', 'adaptive'] as const) {
  for (const budget of [1000, 10000]) {
    const scale = budget === 1000 ? 0.8 : 1;
    grid.push(record('none', '', policy, budget, 0, 0, 0.7 * scale, 0.6 * scale));
    grid.push(record('mad', 'eps=0.1', policy, budget, 0.001, 0.1, 0.6 * scale, 0.58 * scale));
    grid.push(record('mad', 'eps=0.5', policy, budget, 0.008, 0.5, 0.5 * scale, 0.55 * scale));
    grid.push(record('mad', 'eps=1', policy, budget, 0.5, 1, 0.2 * scale, 0.1 * scale));
    grid.push(record('argmax', '', policy, budget, 0, 0.3, 0.56 * scale, 0.56 * scale));
    grid.push(record('rounding', 'decimals=0', policy, budget, 0.03, 0.6, 0.4 * scale, 0.5 * scale));
  }
}

describe('report', () => {
  it('picks, per family, the setting that hurts the attacker most within 1 point of defender accuracy', () => {
    const choices = bestWithinUtility(grid, 'random', 10000, 'soft');
    const mad = choices.find((c) => c.family === 'mad')!;
    assert.equal(mad.best?.params, 'eps=0.5');
    assert.equal(mad.withinBudget, 2);
    assert.equal(choices.find((c) => c.family === 'rounding')!.best, undefined);
    assert.equal(bestWithinUtility(grid, 'random', 10000, 'argmax').find((c) => c.family === 'mad')!.best?.params, 'eps=0.5');
  });

  it('writes results.json, results.csv with every column, SVG plots and a self-contained HTML page', async () => {
    const dir = await scratchDir('msd-report-');
    const files = await writeReport(dir, grid, { name: 'unit', victim: 'mnist', world: 'open', seed: 1, generatedAt: 'now' });
    for (const file of [files.json, files.csv, files.html, ...files.plots]) assert.ok((await stat(file)).size > 0, file);
    const csv = parseCsv(await readFile(files.csv, 'utf8'));
    assert.deepEqual(csv[0], [...REPORT_COLUMNS]);
    assert.equal(csv.length, 1 + grid.length * 2);
    for (const column of [
      'defense',
      'params',
      'policy',
      'budget',
      'world',
      'defender_accuracy',
      'l1_mean',
      'l1_median',
      'top1_change_rate',
      'attacker_accuracy',
      'attacker_agreement',
      'queries',
      'seconds',
    ]) {
      assert.ok((csv[0] as string[]).includes(column), column);
    }
    const json = JSON.parse(await readFile(files.json, 'utf8'));
    assert.equal(json.runs.length, grid.length);
    // Trade-off plots for both policies and attackers, and a budget plot per attacker.
    const names = files.plots.map((p) => p.replace(/^.*[\\/]/, '')).sort();
    assert.deepEqual(names, [
      'budget-argmax-attacker.svg',
      'budget.svg',
      'tradeoff-accuracy-loss-adaptive-argmax-attacker.svg',
      'tradeoff-accuracy-loss-adaptive.svg',
      'tradeoff-accuracy-loss-random-argmax-attacker.svg',
      'tradeoff-accuracy-loss-random.svg',
      'tradeoff-accuracy-loss-worst-case.svg',
      'tradeoff-l1-adaptive-argmax-attacker.svg',
      'tradeoff-l1-adaptive.svg',
      'tradeoff-l1-random-argmax-attacker.svg',
      'tradeoff-l1-random.svg',
      'tradeoff-l1-worst-case.svg',
    ]);
    const tradeoff = await readFile(join(dir, 'tradeoff-accuracy-loss-random.svg'), 'utf8');
    // One curve per defended family (mad has three settings: a polyline), the undefended reference dashed.
    assert.equal((tradeoff.match(/<polyline/g) ?? []).length, 1);
    assert.match(tradeoff, /undefended 70%/);
    for (const family of ['mad', 'argmax', 'rounding']) assert.match(tradeoff, new RegExp(`>${family}</text>`));
    const html = await readFile(files.html, 'utf8');
    assert.equal((html.match(/<svg /g) ?? []).length, files.plots.length);
    assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)=/);
    assert.match(html, /strongest setting ≤ 1 pt loss/);
  });

  it('escapes text in the plots and the CSV', () => {
    const svg = lineChart({
      title: 'a <b> & "c"',
      xLabel: 'x',
      yLabel: 'y',
      series: [
        {
          name: '<s>',
          points: [
            { x: 0, y: 0 },
            { x: 1, y: 1 },
          ],
        },
      ],
    });
    assert.match(svg, /a &lt;b&gt; &amp; &quot;c&quot;/);
    assert.doesNotMatch(svg, /<s>/);
    const csv = toCsv(reportRows([sampleRecord('k', { params: 'a=1,b="2"' })]));
    assert.deepEqual(parseCsv(csv)[1].slice(0, 2), ['mad', 'a=1,b="2"']);
  });

  it('ticks are round and cover the range', () => {
    assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(niceTicks(0.13, 0.71, 3), [0.2, 0.4, 0.6]);
  });

  it('the terminal summary lists every run and the equal-utility comparison', () => {
    const text = summaryText(grid);
    // 12 runs, the worst-case ranking's row, and one row in each of the 4 per-attacker tables.
    assert.equal(text.split('\n').filter((l) => /^mad /.test(l)).length, 12 + 1 + 4);
    assert.match(text, /strongest setting per defense within 1 point/);
    assert.match(text, /rounding\s+none within 1 pt/);
  });
});

describe('report over seeded runs', () => {
  /** Three attacker seeds per setting, one budget. */
  function seeded(defense: string, params: string, loss: number, softBySeed: number[]): RunRecord[] {
    return softBySeed.map((soft, seed) =>
      sampleRecord(`${defense}-${seed}`, {
        defense,
        params,
        spec: params ? `${defense}:${params}` : defense,
        budget: 10000,
        attackerSeed: seed,
        knockoffArch: 'cnn',
        defender: { accuracy: 0.97 - loss, accuracyLoss: loss, l1Mean: 0.5, l1Median: 0.5, top1ChangeRate: loss },
        attackers: [{ labels: 'soft', accuracy: soft, agreement: soft }],
      }),
    );
  }
  const runs = [
    ...seeded('none', '', 0, [0.7, 0.71, 0.69]),
    ...seeded('mad', 'eps=0.5', 0.005, [0.5, 0.6, 0.7]),
    ...seeded('reverse-sigmoid', 'beta=0.5', 0.004, [0.55, 0.62, 0.66]),
    ...seeded('argmax', '', 0, [0.69, 0.7, 0.71]),
  ];

  it('averages the seeds with 95% intervals, draws error bars, and skips the one-budget plot', async () => {
    const dir = await scratchDir('msd-report-seeds-');
    const files = await writeReport(dir, runs, { name: 'seeded', victim: 'mnist', world: 'open', seed: 1, generatedAt: 'now' });
    const names = files.plots.map((p) => p.replace(/^.*[\\/]/, ''));
    assert.ok(!names.some((n) => n.startsWith('budget')), `one budget, yet ${names.join(', ')}`);
    // The undefended setting alone gives no curve: no trade-off plot at all.
    const alone = await writeReport(
      await scratchDir('msd-report-none-'),
      runs.filter((r) => r.defense === 'none'),
      { name: 'none', victim: 'mnist', world: 'open', seed: 1, generatedAt: 'now' },
    );
    assert.deepEqual(alone.plots, []);
    assert.ok(names.length > 0);
    const svg = await readFile(files.plots[0], 'utf8');
    // Three families with spread get error bars (none is the reference line, not a curve).
    assert.equal((svg.match(/class="error-bar"/g) ?? []).length, 3);
    const csv = parseCsv(await readFile(files.csv, 'utf8'));
    assert.equal(csv.length, 1 + 4, 'one row per setting');
    const column = (name: string) => REPORT_COLUMNS.indexOf(name as (typeof REPORT_COLUMNS)[number]);
    const mad = csv.find((r) => r[0] === 'mad')!;
    assert.equal(Number(mad[column('attacker_accuracy')]).toFixed(6), '0.600000');
    // By hand: sd 0.1, t(0.975, 2) = 4.302653 → 0.248414.
    assert.ok(Math.abs(Number(mad[column('attacker_accuracy_ci95')]) - 0.248414) < 1e-5, mad.join(','));
    assert.equal(mad[column('seeds')], '3');
    assert.equal(mad[column('knockoff_arch')], 'cnn');
    assert.equal(mad[column('attacker_family')], 'knockoff');
  });

  it("says which defenses are statistically tied with the strongest (Welch's t-test)", () => {
    const text = summaryText(runs);
    // MAD (mean 60%) is the strongest; reverse sigmoid (61%) is within the noise; argmax (70%, tight) is not.
    assert.match(text, /mad\s+eps=0\.5.*60% ± 24\.8 \(n=3\).*strongest/);
    assert.match(text, /reverse-sigmoid.*tied \(p=0\.\d+\)/);
    assert.match(text, /argmax.*weaker|argmax.*tied/);
  });

  it('says whether the adaptive attacker beats random sampling, per setting and budget', async () => {
    const policy = (spec: string, name: 'random' | 'adaptive', accuracies: number[]) =>
      accuracies.map((accuracy, seed) =>
        sampleRecord(`${spec}-${name}-${seed}`, {
          defense: spec,
          params: '',
          spec,
          policy: name,
          budget: 5000,
          attackerSeed: seed,
          attackers: [{ labels: 'soft', accuracy, agreement: accuracy }],
        }),
      );
    const both = [
      ...policy('none', 'random', [0.45, 0.46, 0.47]),
      ...policy('none', 'adaptive', [0.451, 0.468, 0.459]),
      ...policy('argmax', 'random', [0.4, 0.41, 0.42]),
      ...policy('argmax', 'adaptive', [0.5, 0.51, 0.52]),
      ...policy('mad', 'random', [0.3]),
      ...policy('mad', 'adaptive', [0.2]),
    ];
    const verdicts = new Map(adaptiveAgainstRandom(aggregateRuns(both)).map((c) => [c.spec, c.verdict]));
    assert.match(verdicts.get('none')!, /^tied \(p=0\.\d+\)$/);
    // t = 0.1 / sqrt(2 · 0.01² / 3) = 12.2 on 4 degrees of freedom: p ≈ 0.0003.
    assert.equal(verdicts.get('argmax'), 'adaptive stronger (p=<0.001)');
    assert.equal(verdicts.get('mad'), 'untested (one seed)');
    const flipped = adaptiveAgainstRandom(
      aggregateRuns(both.map((r) => (r.defense === 'argmax' ? { ...r, policy: r.policy === 'random' ? 'adaptive' : 'random' } : r))),
    );
    assert.match(flipped.find((c) => c.spec === 'argmax')!.verdict, /^random stronger/);
    assert.match(summaryText(both), /Adaptive against random[\s\S]*argmax\s+5000.*adaptive stronger/);
    const dir = await scratchDir('msd-report-policies-');
    const html = await readFile((await writeReport(dir, both, { name: 'policies', victim: 'mnist', world: 'open', seed: 1, generatedAt: 'now' })).html, 'utf8');
    assert.match(html, /Does the adaptive attacker beat random sampling\?/);
    assert.match(html, /<td>none<\/td><td>5000<\/td>.*tied/);
    // Without the adaptive policy there is nothing to compare, and no section.
    assert.doesNotMatch(summaryText(runs), /Adaptive against random/);
  });
});
