/**
 * The flat table of the report: one row per run and attacker (soft-label and argmax-label
 * attackers share the run's queries), with every column the CSV and the HTML page show.
 */
import { attackerFamily, attackerName } from '../config.js';
import type { RunRecord } from '../records/run-record.js';
import { aggregateRuns } from './aggregate.js';
import { worstCaseRows } from './worst-case.js';

export interface ReportRow {
  defense: string;
  params: string;
  spec: string;
  policy: string;
  attacker: string;
  budget: number;
  world: string;
  victim: string;
  attacker_labels: string;
  victim_accuracy: number;
  defender_accuracy: number;
  defender_accuracy_loss: number;
  l1_mean: number;
  l1_median: number;
  top1_change_rate: number;
  attacker_accuracy: number;
  attacker_agreement: number;
  queries: number;
  requests: number;
  seconds: number;
  seed: number;
  key: string;
  attacker_family: string;
  knockoff_arch: string;
  /** Seeded runs averaged in this row; the intervals are 95% Student-t half-widths (empty for one seed). */
  seeds: number;
  attacker_accuracy_ci95: number | '';
  attacker_agreement_ci95: number | '';
  /** The attacker of this row: its family and labels ("top-1" for the Knockoff on top-1 labels). */
  attacker_name: string;
  /** The setting's worst case at this budget: the strongest attacker and its accuracy. */
  worst_case_attacker: string;
  worst_case_accuracy: number;
  worst_case_ci95: number | '';
  /** Answers to this run's queries against the clean ones (empty where not measured). */
  query_top1_change_rate: number | '';
  answers_l1_raw: number | '';
  answers_l1_used: number | '';
  /** Restorer families: mean L1 on held-out shadow queries, defended and restored. */
  restorer_l1_defended: number | '';
  restorer_l1_restored: number | '';
}

export const REPORT_COLUMNS: readonly (keyof ReportRow)[] = [
  'defense',
  'params',
  'spec',
  'policy',
  'attacker',
  'budget',
  'world',
  'victim',
  'attacker_labels',
  'victim_accuracy',
  'defender_accuracy',
  'defender_accuracy_loss',
  'l1_mean',
  'l1_median',
  'top1_change_rate',
  'attacker_accuracy',
  'attacker_agreement',
  'queries',
  'requests',
  'seconds',
  'seed',
  'key',
  'attacker_family',
  'knockoff_arch',
  'seeds',
  'attacker_accuracy_ci95',
  'attacker_agreement_ci95',
  'attacker_name',
  'worst_case_attacker',
  'worst_case_accuracy',
  'worst_case_ci95',
  'query_top1_change_rate',
  'answers_l1_raw',
  'answers_l1_used',
  'restorer_l1_defended',
  'restorer_l1_restored',
];

/** One row per setting (seeded runs averaged) and attacker. */
export function reportRows(records: readonly RunRecord[]): ReportRow[] {
  const aggregated = aggregateRuns(records);
  const worst = new Map<string, { name: string; accuracy: number; halfWidth?: number }>();
  for (const budget of new Set(aggregated.map((r) => r.budget))) {
    for (const row of worstCaseRows(aggregated, budget))
      worst.set(`${row.spec}\u0000${budget}`, { name: row.worst.name, accuracy: row.worst.outcome.accuracy, halfWidth: row.worst.outcome.accuracyHalfWidth });
  }
  const blank = (v: number | undefined): number | '' => (v === undefined ? '' : v);
  return aggregated.flatMap((record) =>
    record.attackers.map((attacker) => ({
      defense: record.defense,
      params: record.params,
      spec: record.spec,
      policy: record.policy,
      attacker: record.attacker ?? attackerFamily(record.policy),
      budget: record.budget,
      world: record.world,
      victim: record.victim,
      attacker_labels: attacker.labels,
      victim_accuracy: record.victimAccuracy,
      defender_accuracy: record.defender.accuracy,
      defender_accuracy_loss: record.defender.accuracyLoss,
      l1_mean: record.defender.l1Mean,
      l1_median: record.defender.l1Median,
      top1_change_rate: record.defender.top1ChangeRate,
      attacker_accuracy: attacker.accuracy,
      attacker_agreement: attacker.agreement,
      queries: record.queries,
      requests: record.requests,
      seconds: record.seconds,
      seed: record.seed,
      key: record.key,
      attacker_family: record.attackerFamily ?? 'knockoff',
      knockoff_arch: record.knockoffArch ?? '',
      seeds: record.seeds ?? 1,
      attacker_accuracy_ci95: attacker.accuracyHalfWidth ?? '',
      attacker_agreement_ci95: attacker.agreementHalfWidth ?? '',
      attacker_name: attackerName(record.policy, attacker.labels),
      worst_case_attacker: worst.get(`${record.spec}\u0000${record.budget}`)?.name ?? '',
      worst_case_accuracy: worst.get(`${record.spec}\u0000${record.budget}`)?.accuracy ?? attacker.accuracy,
      worst_case_ci95: blank(worst.get(`${record.spec}\u0000${record.budget}`)?.halfWidth),
      query_top1_change_rate: blank(record.answerQuality?.rawTop1Changed),
      answers_l1_raw: blank(record.answerQuality?.rawL1),
      answers_l1_used: blank(record.answerQuality?.usedL1),
      restorer_l1_defended: blank(record.restorer?.defendedL1),
      restorer_l1_restored: blank(record.restorer?.restoredL1),
    })),
  );
}

function csvCell(value: unknown): string {
  const text = typeof value === 'number' ? (Number.isInteger(value) ? String(value) : Number(value.toPrecision(6)).toString()) : String(value ?? '');
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(rows: readonly ReportRow[]): string {
  const lines = [REPORT_COLUMNS.join(',')];
  for (const row of rows) lines.push(REPORT_COLUMNS.map((column) => csvCell(row[column])).join(','));
  return `${lines.join('\n')}\n`;
}

/** Parses the CSV this module writes (quoted cells with doubled quotes), for tests and tools. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(cell);
      cell = '';
    } else if (ch === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else if (ch !== '\r') cell += ch;
  }
  if (cell || row.length) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

/** The parameters without those at their usual values, so tables and legends stay narrow. */
export function shortParams(params: string): string {
  return params
    .split(',')
    .filter((p) => p && !/^(norm=l1|jacobian=last-layer|oracle=(extreme|argmax)|dist=gaussian|renormalize=false|nu=1000)$/.test(p))
    .join(',');
}
