/** The terminal summary printed at the end of an evaluation: the runs, then the equal-utility view. */
import type { RunRecord } from '../records/run-record.js';
import { ATTACKER_NAMES, withInterval } from './plots.js';
import { shortParams } from './table.js';
import { aggregateRuns } from './aggregate.js';
import { adaptiveAgainstRandom, attackerOutcome, bestWithinUtility, comparedWithStrongest, labelsOf, largestBudget, policiesOf } from './selection.js';
import { accuracyText, settingLabel, worstCaseSummary } from './worst-case.js';
import { attackerName } from '../config.js';

/** Per-attacker equal-utility tables are printed up to this many attackers (report.html has them all). */
const PER_ATTACKER_TABLES = 4;

/** The worst-case section: attackers as rows, settings as columns, then the ranking and the recommendation. */
function worstCaseText(records: ReturnType<typeof aggregateRuns>): string[] {
  const summary = worstCaseSummary(records, { short: shortParams });
  if (!summary) return [];
  const { rows, columns, choices, verdicts, undefended } = summary;
  const matrix = table(
    ['attacker', '', ...rows.map((r) => settingLabel(r, shortParams))],
    [
      ...columns.map((column) => [
        column.name,
        '',
        ...rows.map((row) => {
          const cell = row.cells.find((c) => c.name === column.name);
          return cell ? `${accuracyText(cell.outcome)}${cell === row.worst ? ' *' : ''}` : '-';
        }),
      ]),
      ['worst case', '', ...rows.map((r) => accuracyText(r.worst.outcome))],
      ['by', '', ...rows.map((r) => r.worst.name)],
      ['defender loss pt', '', ...rows.map((r) => (Number.isNaN(r.defender.accuracyLoss) ? '-' : (r.defender.accuracyLoss * 100).toFixed(2)))],
      [
        'top-1 chg test/queries',
        '',
        ...rows.map((r) =>
          Number.isNaN(r.defender.top1ChangeRate)
            ? '-'
            : `${pct(r.defender.top1ChangeRate)}${r.queryTop1Changed === undefined ? '' : `/${pct(r.queryTop1Changed)}`}`,
        ),
      ],
    ],
  );
  const ranking = table(
    ['defense', 'setting', 'loss pt', 'worst case', 'by', 'cut', "vs strongest (Welch's t, 5%)"],
    choices
      .filter((c) => c.family !== 'none')
      .map((c) => {
        if (!c.best) return [c.family, c.measured ? 'none within 1 pt' : 'loss not measured', '-', '-', '-', '-', '-'];
        const b = c.best;
        return [
          c.family,
          shortParams(b.params) || '-',
          (b.defender.accuracyLoss * 100).toFixed(2),
          accuracyText(b.worst.outcome),
          b.worst.name,
          undefended ? `${((undefended.worst.outcome.accuracy - b.worst.outcome.accuracy) * 100).toFixed(1)} pt` : '-',
          verdicts.get(c.family) ?? '-',
        ];
      }),
  );
  return [
    `What does the best attacker still get? Attacker accuracy per defense setting, ${summary.budget} queries (mean ± 95% CI; * the worst case)\n${matrix}`,
    `Ranking on the worst case: each defense's setting within 1 point of defender accuracy (undefended worst case ${undefended ? `${accuracyText(undefended.worst.outcome)}, ${undefended.worst.name}` : '-'})\n${ranking}\n\n${summary.recommendation}\n${summary.top1Note}`,
  ];
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const pct = (v: number | undefined) => (v === undefined ? '-' : `${(v * 100).toFixed(1)}%`);

const ci = (v: number | undefined) => (v === undefined ? '' : ` ±${(v * 100).toFixed(1)}`);

export function summaryText(seeded: readonly RunRecord[]): string {
  if (seeded.length === 0) return 'no finished runs';
  const records = aggregateRuns(seeded);
  const labels = labelsOf(records);
  const runs = table(
    [
      'defense',
      'params',
      'attacker',
      'budget',
      'def acc',
      'loss pt',
      'L1 mean',
      'top1 chg',
      ...labels.map((l) => (l === 'soft' ? 'soft' : 'top-1')),
      'agree',
      'seeds',
      'sec',
    ],
    records.map((r) => [
      r.defense,
      shortParams(r.params) || '-',
      attackerName(r.policy, 'soft'),
      String(r.budget),
      pct(r.defender.accuracy),
      (r.defender.accuracyLoss * 100).toFixed(2),
      r.defender.l1Mean.toFixed(3),
      pct(r.defender.top1ChangeRate),
      ...labels.map((l) => `${pct(attackerOutcome(r, l)?.accuracy)}${ci(attackerOutcome(r, l)?.accuracyHalfWidth)}`),
      pct(r.attackers[0]?.agreement),
      String(r.seeds ?? 1),
      r.seconds.toFixed(0),
    ]),
  );
  const budget = largestBudget(records);
  const sections = [`victim accuracy ${pct(records[0].victimAccuracy)} (${records[0].victim}, ${records[0].world} world)`, runs, ...worstCaseText(records)];
  const perAttacker = policiesOf(records).length * labels.length <= PER_ATTACKER_TABLES;
  if (!perAttacker) sections.push(`Per-attacker equal-utility tables: report.html (${policiesOf(records).length * labels.length} attackers).`);
  for (const policy of perAttacker ? policiesOf(records) : []) {
    for (const l of labels) {
      const none = records.find((r) => r.defense === 'none' && r.policy === policy && r.budget === budget);
      const undefended = none ? attackerOutcome(none, l)?.accuracy : undefined;
      const choices = bestWithinUtility(records, policy, budget, l);
      const verdicts = comparedWithStrongest(choices, l);
      const rows = choices
        .filter((c) => c.family !== 'none')
        .map((c) => {
          if (!c.best) return [c.family, 'none within 1 pt', '-', '-', '-', '-', '-'];
          const acc = attackerOutcome(c.best, l)!.accuracy;
          return [
            c.family,
            shortParams(c.best.params) || '-',
            (c.best.defender.accuracyLoss * 100).toFixed(2),
            c.best.defender.l1Mean.toFixed(3),
            withInterval(attackerOutcome(c.best, l)!),
            undefended === undefined ? '-' : `${((undefended - acc) * 100).toFixed(1)} pt`,
            verdicts.get(c.family) ?? '-',
          ];
        });
      sections.push(
        `${attackerName(policy, l)} (trained on ${l === 'soft' ? 'the answers' : 'their top-1 labels'}), ${budget} queries: strongest setting per defense within 1 point of defender accuracy (undefended attacker ${pct(undefended)})\n` +
          table(['defense', 'setting', 'loss pt', 'L1 mean', 'attacker (mean ± 95% CI)', 'cut', "vs strongest (Welch's t, 5%)"], rows),
      );
    }
  }
  const policies = adaptiveAgainstRandom(records);
  if (policies.length > 0) {
    sections.push(
      "Adaptive against random: the attacker's accuracy with each policy (Welch's t, 5%)\n" +
        table(
          ['defense', 'budget', 'attacker', 'random', 'adaptive', 'verdict'],
          policies.map((c) => [c.spec, String(c.budget), ATTACKER_NAMES[c.labels], withInterval(c.random), withInterval(c.adaptive), c.verdict]),
        ),
    );
  }
  return sections.join('\n\n');
}
