/**
 * The report's plots, as in the Prediction Poisoning paper: attacker accuracy against the
 * defender's accuracy loss and against the mean L1 perturbation (one curve per defense family,
 * at the largest budget), and attacker accuracy against the query budget.
 */
import type { AttackerLabels, PolicyName } from '../config.js';
import type { RunRecord } from '../records/run-record.js';
import { aggregateRuns } from './aggregate.js';
import { attackerOutcome, bestWithinUtility, byFamily, labelsOf, largestBudget, policiesOf } from './selection.js';
import { lineChart, PALETTE, type ChartSeries } from './svg-chart.js';
import { shortParams } from './table.js';
import { worstCaseRows, type WorstCaseRow } from './worst-case.js';

export interface Plot {
  /** File name in the results folder. */
  file: string;
  title: string;
  svg: string;
}

const percent = (v: number) => `${Number((v * 100).toPrecision(3))}%`;
const points = (v: number) => `${Number((v * 100).toPrecision(3))}`;

export const ATTACKER_NAMES: Record<AttackerLabels, string> = {
  soft: 'Knockoff (soft labels)',
  argmax: 'top-1 attacker (knockoff on the answers’ top-1 labels)',
};

function undefendedReference(records: readonly RunRecord[], labels: AttackerLabels): { y: number; label: string } | undefined {
  const none = records.find((r) => r.defense === 'none');
  const outcome = none && attackerOutcome(none, labels);
  return outcome ? { y: outcome.accuracy, label: `undefended ${percent(outcome.accuracy)}` } : undefined;
}

/** One colour per defense family, the same in every plot. */
type Colors = (family: string) => string;

function familyColors(records: readonly RunRecord[]): Colors {
  const families = [...byFamily(records).keys()];
  return (family) => PALETTE[Math.max(0, families.indexOf(family)) % PALETTE.length];
}

function tradeoffSeries(records: readonly RunRecord[], labels: AttackerLabels, x: (r: RunRecord) => number, colors: Colors): ChartSeries[] {
  return [...byFamily(records)]
    .filter(([family]) => family !== 'none')
    .map(([family, runs]) => ({
      name: family,
      color: colors(family),
      points: runs
        .map((r) => ({
          x: x(r),
          y: attackerOutcome(r, labels)!.accuracy,
          yError: attackerOutcome(r, labels)!.accuracyHalfWidth,
          label: `${r.spec}: defender loss ${points(r.defender.accuracyLoss)} pt, L1 ${r.defender.l1Mean.toFixed(3)}, attacker ${withInterval(attackerOutcome(r, labels)!)}`,
        }))
        .sort((a, b) => a.x - b.x || a.y - b.y),
    }));
}

/** "58.6%" or "58.6% ± 1.2 (n=3)". */
export function withInterval(outcome: { accuracy: number; accuracyHalfWidth?: number; accuracies?: number[] }): string {
  if (outcome.accuracyHalfWidth === undefined) return percent(outcome.accuracy);
  return `${percent(outcome.accuracy)} ± ${points(outcome.accuracyHalfWidth)} (n=${outcome.accuracies?.length ?? '?'})`;
}

/** How many x values the series hold together: a plot needs two to show a trend. */
function distinctX(series: readonly ChartSeries[]): number {
  return new Set(series.flatMap((s) => s.points.map((p) => p.x))).size;
}

function suffix(policy: PolicyName, labels: AttackerLabels): string {
  return `${policy}${labels === 'soft' ? '' : '-argmax-attacker'}`;
}

/** Worst-case trade-off curves: one per defense family, y the strongest attacker's accuracy at each setting. */
function worstCaseSeries(rows: readonly WorstCaseRow[], x: (r: WorstCaseRow) => number, colors: Colors): ChartSeries[] {
  const families = new Map<string, WorstCaseRow[]>();
  for (const row of rows) if (row.family !== 'none') families.set(row.family, [...(families.get(row.family) ?? []), row]);
  return [...families].map(([family, settings]) => ({
    name: family,
    color: colors(family),
    points: settings
      .map((r) => ({
        x: x(r),
        y: r.worst.outcome.accuracy,
        yError: r.worst.outcome.accuracyHalfWidth,
        label: `${r.spec}: defender loss ${points(r.defender.accuracyLoss)} pt, L1 ${r.defender.l1Mean.toFixed(3)}, worst case ${withInterval(r.worst.outcome)} (${r.worst.name})`,
      }))
      .filter((p) => Number.isFinite(p.x))
      .sort((a, b) => a.x - b.x || a.y - b.y),
  }));
}

/** The plots; seeded runs are averaged and drawn with 95% error bars. A plot with one x value (one budget) is skipped. */
export function buildPlots(seeded: readonly RunRecord[]): Plot[] {
  if (seeded.length === 0) return [];
  const records = aggregateRuns(seeded);
  const plots: Plot[] = [];
  const budget = largestBudget(records);
  const policies = policiesOf(records);
  const colors = familyColors(records);
  const worst = worstCaseRows(records, budget);
  const none = worst.find((r) => r.family === 'none');
  const worstReference = none ? { y: none.worst.outcome.accuracy, label: `undefended worst case ${percent(none.worst.outcome.accuracy)}` } : undefined;
  const worstContext = `worst case over every attacker measured, ${budget} queries`;
  const worstLoss = worstCaseSeries(worst, (r) => r.defender.accuracyLoss, colors);
  if (distinctX(worstLoss) >= 2) {
    plots.push({
      file: 'tradeoff-accuracy-loss-worst-case.svg',
      title: `Best attacker's accuracy vs defender accuracy loss (${worstContext})`,
      svg: lineChart({
        title: "Best attacker's accuracy vs defender accuracy loss",
        subtitle: worstContext,
        xLabel: 'defender accuracy loss (points)',
        yLabel: 'strongest attacker’s accuracy on the victim’s test set',
        series: worstLoss,
        reference: worstReference,
        xFormat: points,
        yFormat: percent,
      }),
    });
  }
  const worstL1 = worstCaseSeries(worst, (r) => r.defender.l1Mean, colors);
  if (distinctX(worstL1) >= 2) {
    plots.push({
      file: 'tradeoff-l1-worst-case.svg',
      title: `Best attacker's accuracy vs mean L1 perturbation (${worstContext})`,
      svg: lineChart({
        title: "Best attacker's accuracy vs mean L1 perturbation",
        subtitle: worstContext,
        xLabel: 'mean L1 distance between true and defended answers',
        yLabel: 'strongest attacker’s accuracy on the victim’s test set',
        series: worstL1,
        reference: worstReference,
        xDomain: [0, 2],
        yFormat: percent,
      }),
    });
  }
  for (const labels of labelsOf(records)) {
    for (const policy of policies) {
      const runs = records.filter((r) => r.policy === policy && r.budget === budget && attackerOutcome(r, labels));
      if (runs.length === 0) continue;
      const reference = undefendedReference(runs, labels);
      const context = `${ATTACKER_NAMES[labels]}, ${policy} policy, ${budget} queries`;
      const lossTitle = 'Attacker accuracy vs defender accuracy loss';
      const lossSeries = tradeoffSeries(runs, labels, (r) => r.defender.accuracyLoss, colors);
      const l1Series = tradeoffSeries(runs, labels, (r) => r.defender.l1Mean, colors);
      if (distinctX(lossSeries) >= 2)
        plots.push({
          file: `tradeoff-accuracy-loss-${suffix(policy, labels)}.svg`,
          title: `${lossTitle} (${context})`,
          svg: lineChart({
            title: lossTitle,
            subtitle: context,
            xLabel: 'defender accuracy loss (points)',
            yLabel: 'attacker accuracy on the victim’s test set',
            series: lossSeries,
            reference,
            xFormat: points,
            yFormat: percent,
          }),
        });
      const l1Title = 'Attacker accuracy vs mean L1 perturbation';
      if (distinctX(l1Series) >= 2)
        plots.push({
          file: `tradeoff-l1-${suffix(policy, labels)}.svg`,
          title: `${l1Title} (${context})`,
          svg: lineChart({
            title: l1Title,
            subtitle: context,
            xLabel: 'mean L1 distance between true and defended answers',
            yLabel: 'attacker accuracy on the victim’s test set',
            series: l1Series,
            reference,
            xDomain: [0, 2],
            yFormat: percent,
          }),
        });
    }
    if (new Set(records.map((r) => r.budget)).size < 2) continue;
    const budgetTitle = 'Attacker accuracy vs query budget';
    const budgetContext = `${ATTACKER_NAMES[labels]}; per defense, its strongest setting within 1 point of defender accuracy`;
    plots.push({
      file: `budget${labels === 'soft' ? '' : '-argmax-attacker'}.svg`,
      title: `${budgetTitle} (${budgetContext})`,
      svg: lineChart({
        title: budgetTitle,
        subtitle: budgetContext,
        xLabel: 'queries',
        yLabel: 'attacker accuracy',
        series: budgetSeries(records, labels, budget, colors),
        xLog: largestBudget(records) / Math.max(1, Math.min(...records.map((r) => r.budget))) >= 10,
        yFormat: percent,
      }),
    });
  }
  return plots;
}

/** One curve per chosen setting and policy: the setting chosen at the largest budget, followed over all budgets. */
function budgetSeries(records: readonly RunRecord[], labels: AttackerLabels, budget: number, colors: Colors): ChartSeries[] {
  const series: ChartSeries[] = [];
  for (const policy of policiesOf(records)) {
    for (const choice of bestWithinUtility(records, policy, budget, labels)) {
      if (!choice.best) continue;
      const spec = choice.best.spec;
      const runs = records.filter((r) => r.spec === spec && r.policy === policy && attackerOutcome(r, labels)).sort((a, b) => a.budget - b.budget);
      const params = shortParams(choice.best.params);
      series.push({
        color: colors(choice.family),
        dashed: policy === 'adaptive',
        name: `${choice.family}${params ? ` ${params}` : ''}${policiesOf(records).length > 1 ? ` (${policy})` : ''}`,
        points: runs.map((r) => ({
          x: r.budget,
          y: attackerOutcome(r, labels)!.accuracy,
          yError: attackerOutcome(r, labels)!.accuracyHalfWidth,
          label: `${r.spec}, ${policy}, ${r.budget} queries: ${withInterval(attackerOutcome(r, labels)!)}`,
        })),
      });
    }
  }
  return series;
}
