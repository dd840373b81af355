/**
 * The evaluation's figures as Prometheus gauges on the serving layer's metrics, per defense: the
 * utility lost and the Knockoff attacker's accuracy (`attacker_accuracy_ratio`, the headline run:
 * largest budget, random policy first), and the worst case (`worst_case_attacker_accuracy_ratio`):
 * the strongest attacker the grid measured against the setting, as in the report's worst-case
 * column (mean over attacker seeds, largest budget), labelled with that attacker's report name.
 * The soft Knockoff attacker alone over-states a defense that keeps every top-1 label: the top-1
 * attacker gets the undefended labels from it.
 */
import { Gauge } from 'prom-client';
import { getOrCreateMetric, recordEvaluation, type ServingMetrics } from '../../server/metrics.js';
import { ATTACKER_LABELS, attackerName, POLICIES } from '../config.js';
import type { RunRecord } from '../records/run-record.js';
import { aggregateRuns } from './aggregate.js';
import { largestBudget } from './selection.js';
import { worstCaseRows } from './worst-case.js';

/** Every attacker name the report can give: the values of the worst-case gauge's `attacker` label. */
const ATTACKER_NAMES = [...new Set(POLICIES.flatMap((policy) => ATTACKER_LABELS.map((labels) => attackerName(policy, labels))))];

/** The worst-case gauge in the metrics' registry (created on first use, under the metrics' prefix). */
export function worstCaseGauge(metrics: ServingMetrics): Gauge<'defense' | 'attacker'> {
  return getOrCreateMetric(metrics.registry, Gauge<'defense' | 'attacker'>, {
    name: `${metrics.prefix}worst_case_attacker_accuracy_ratio`,
    help: "Top-1 accuracy of the strongest attacker against the defense (the report's worst case, mean over attacker seeds), as measured by the last evaluation (0..1)",
    labelNames: ['defense', 'attacker'],
    aggregator: 'max',
  });
}

/** Sets the gauges from the records (raw or aggregated) of one evaluation. */
export function publishGauges(metrics: ServingMetrics, records: readonly RunRecord[]): void {
  const budget = largestBudget(records);
  const headline = new Map<string, RunRecord>();
  for (const record of records) {
    if (record.budget !== budget) continue;
    const current = headline.get(record.spec);
    if (!current || (current.policy !== 'random' && record.policy === 'random')) headline.set(record.spec, record);
  }
  for (const record of headline.values()) {
    const soft = record.attackers.find((a) => a.labels === 'soft') ?? record.attackers[0];
    recordEvaluation(metrics, { defense: record.spec, utilityLoss: Math.min(1, Math.max(0, record.defender.accuracyLoss)), attackerAccuracy: soft?.accuracy });
  }
  const gauge = worstCaseGauge(metrics);
  for (const row of worstCaseRows(aggregateRuns(records), budget)) {
    const accuracy = row.worst.outcome.accuracy;
    if (!Number.isFinite(accuracy)) continue;
    // One series per defense: a stronger attacker measured later replaces the earlier one's.
    for (const name of ATTACKER_NAMES) if (name !== row.worst.name) gauge.remove({ defense: row.spec, attacker: name });
    gauge.set({ defense: row.spec, attacker: row.worst.name }, Math.min(1, Math.max(0, accuracy)));
  }
}
