/**
 * What does the best attacker still get? For every defense setting (and budget), every attacker the
 * grid measured (each family, on soft answers and on top-1 labels), and the worst case: the attacker
 * with the highest mean accuracy. The equal-utility ranking is done on the worst case: per defense
 * family, the setting within 1 point of defender accuracy whose worst case is lowest, compared with
 * the strongest family by Welch's test on the worst-case attacker's per-seed accuracies.
 *
 * A defense that keeps every top-1 label hands the top-1 attacker the undefended labels: its worst
 * case can never fall below what that attacker gets against no defense. The report says so, and names
 * the settings that changed no top-1 label (on the test set, and on the attacker's own queries where
 * the evaluation measured them).
 */
import { ATTACKER_LABELS, attackerName, POLICIES, type AttackerLabels, type PolicyName } from '../config.js';
import type { AttackerOutcome, DefenderOutcome, RunRecord } from '../records/run-record.js';
import { welchTest } from '../records/stats.js';
import { DEFAULT_MAX_ACCURACY_LOSS, largestBudget } from './selection.js';

export interface AttackerColumn {
  name: string;
  policy: PolicyName;
  labels: AttackerLabels;
}

export interface AttackerCell extends AttackerColumn {
  outcome: AttackerOutcome;
  record: RunRecord;
}

export interface WorstCaseRow {
  spec: string;
  family: string;
  params: string;
  budget: number;
  defender: DefenderOutcome;
  /** Every attacker measured against the setting, in column order. */
  cells: AttackerCell[];
  /** The strongest attacker (highest mean accuracy). */
  worst: AttackerCell;
  /** Share of the attacker's queries whose top-1 the defense changed (a Knockoff-policy run's answers; undefined when not measured). */
  queryTop1Changed?: number;
  /** No top-1 label changed on the test set (nor on the attacker's queries, where measured). */
  keepsTop1: boolean;
}

/** The attackers present in the (aggregated) records, in the report's column order. */
export function attackerColumns(records: readonly RunRecord[]): AttackerColumn[] {
  const present = new Set(records.flatMap((r) => r.attackers.map((a) => `${r.policy}\u0000${a.labels}`)));
  return POLICIES.flatMap((policy) =>
    ATTACKER_LABELS.filter((labels) => present.has(`${policy}\u0000${labels}`)).map((labels) => ({ name: attackerName(policy, labels), policy, labels })),
  );
}

/** One row per setting at `budget` (aggregated records: one per setting, family and budget), settings in order of first appearance. */
export function worstCaseRows(records: readonly RunRecord[], budget = largestBudget(records)): WorstCaseRow[] {
  const columns = attackerColumns(records);
  const bySpec = new Map<string, RunRecord[]>();
  for (const record of records) {
    if (record.budget !== budget) continue;
    bySpec.set(record.spec, [...(bySpec.get(record.spec) ?? []), record]);
  }
  const rows: WorstCaseRow[] = [];
  for (const [spec, group] of bySpec) {
    const cells: AttackerCell[] = [];
    for (const column of columns) {
      const record = group.find((r) => r.policy === column.policy);
      const outcome = record?.attackers.find((a) => a.labels === column.labels);
      if (record && outcome) cells.push({ ...column, outcome, record });
    }
    if (cells.length === 0) continue;
    const worst = cells.reduce((a, b) => (b.outcome.accuracy > a.outcome.accuracy ? b : a));
    // The answers to a Knockoff policy's queries are the defense's own (the other families reshape them).
    const measured = group.find((r) => (r.policy === 'random' || r.policy === 'adaptive') && r.answerQuality) ?? group.find((r) => r.answerQuality);
    const queryTop1Changed = measured?.answerQuality?.rawTop1Changed;
    const first = group[0];
    rows.push({
      spec,
      family: first.defense,
      params: first.params,
      budget,
      defender: first.defender,
      cells,
      worst,
      queryTop1Changed,
      keepsTop1: first.defender.top1ChangeRate === 0 && (queryTop1Changed === undefined || queryTop1Changed === 0),
    });
  }
  return rows;
}

export interface WorstCaseChoice {
  family: string;
  /** The family's setting with the lowest worst case within the utility budget. */
  best?: WorstCaseRow;
  settings: number;
  withinBudget: number;
  /** Whether the family's defender loss was measured (an external target without --reference has none). */
  measured: boolean;
}

/** Per family, the setting within `maxLoss` of defender accuracy whose worst-case attacker is weakest. */
export function worstCaseChoices(rows: readonly WorstCaseRow[], maxLoss = DEFAULT_MAX_ACCURACY_LOSS): WorstCaseChoice[] {
  const families = new Map<string, WorstCaseRow[]>();
  for (const row of rows) families.set(row.family, [...(families.get(row.family) ?? []), row]);
  return [...families].map(([family, settings]) => {
    // An unmeasured loss (an external target without --reference) is not known to fit.
    const fitting = settings.filter((r) => r.defender.accuracyLoss <= maxLoss + 1e-9);
    const best = fitting.reduce<WorstCaseRow | undefined>((acc, r) => (!acc || r.worst.outcome.accuracy < acc.worst.outcome.accuracy ? r : acc), undefined);
    return { family, best, settings: settings.length, withinBudget: fitting.length, measured: settings.some((r) => Number.isFinite(r.defender.accuracyLoss)) };
  });
}

/** What a ranking row says when a family has no setting within the budget. */
export function noChoiceText(choice: WorstCaseChoice): string {
  return choice.measured ? `no setting within 1 point (${choice.settings} measured)` : 'defender loss not measured (no undefended reference)';
}

const pValue = (p: number) => (p < 0.001 ? '<0.001' : p.toFixed(3));

/** Each defended family's choice against the strongest one (lowest worst case): Welch's two-sided t-test at 5%. */
export function worstCaseVerdicts(choices: readonly WorstCaseChoice[]): Map<string, string> {
  const candidates = choices.filter((c) => c.best && c.family !== 'none');
  const verdicts = new Map<string, string>();
  const strongest = candidates.reduce<WorstCaseChoice | undefined>(
    (acc, c) => (!acc || c.best!.worst.outcome.accuracy < acc.best!.worst.outcome.accuracy ? c : acc),
    undefined,
  );
  if (!strongest) return verdicts;
  const samples = (c: WorstCaseChoice) => c.best!.worst.outcome.accuracies ?? [];
  for (const choice of candidates) {
    if (choice === strongest) {
      verdicts.set(choice.family, 'strongest');
      continue;
    }
    const test = welchTest(samples(strongest), samples(choice));
    verdicts.set(choice.family, test === undefined ? 'untested (one seed)' : `${test.p >= 0.05 ? 'tied' : 'weaker'} (p=${pValue(test.p)})`);
  }
  return verdicts;
}

export interface WorstCaseSummary {
  budget: number;
  columns: AttackerColumn[];
  rows: WorstCaseRow[];
  choices: WorstCaseChoice[];
  verdicts: Map<string, string>;
  /** The undefended setting's row, when the grid has one. */
  undefended?: WorstCaseRow;
  recommended?: WorstCaseChoice;
  recommendation: string;
  /** The top-1 attacker and the defenses that keep top-1, by construction. */
  top1Note: string;
}

const pct = (v: number) => `${(v * 100).toFixed(1)}%`;

/** "58.6%" or "58.6% ± 1.2". */
export function accuracyText(outcome: Pick<AttackerOutcome, 'accuracy' | 'accuracyHalfWidth'>): string {
  return outcome.accuracyHalfWidth === undefined ? pct(outcome.accuracy) : `${pct(outcome.accuracy)} ± ${(outcome.accuracyHalfWidth * 100).toFixed(1)}`;
}

export function settingLabel(row: Pick<WorstCaseRow, 'family' | 'params'>, short: (params: string) => string = (p) => p): string {
  const params = short(row.params);
  return params ? `${row.family} ${params}` : row.family;
}

/** The worst-case view of a grid (aggregated records) at its largest budget; undefined for no records. */
export function worstCaseSummary(
  records: readonly RunRecord[],
  options: { maxLoss?: number; short?: (params: string) => string } = {},
): WorstCaseSummary | undefined {
  if (records.length === 0) return undefined;
  const budget = largestBudget(records);
  const rows = worstCaseRows(records, budget);
  if (rows.length === 0) return undefined;
  const maxLoss = options.maxLoss ?? DEFAULT_MAX_ACCURACY_LOSS;
  const short = options.short ?? ((p: string) => p);
  const choices = worstCaseChoices(rows, maxLoss);
  const verdicts = worstCaseVerdicts(choices);
  const undefended = rows.find((r) => r.family === 'none');
  const recommended = choices.find((c) => verdicts.get(c.family) === 'strongest');
  const budgetText = `${(maxLoss * 100).toFixed(maxLoss * 100 >= 1 ? 0 : 1)} point${maxLoss === 0.01 ? '' : 's'} of defender accuracy`;
  let recommendation: string;
  if (choices.every((c) => c.family === 'none' || !c.measured)) {
    recommendation =
      "The defender's accuracy loss was not measured (no undefended reference to compare with; --target takes it as --reference URL): no ranking at equal utility.";
  } else if (!recommended?.best) {
    recommendation = `No defense setting stays within ${budgetText}: nothing to recommend at ${budget} queries.`;
  } else {
    const best = recommended.best;
    const cut = undefended
      ? ` against ${accuracyText(undefended.worst.outcome)} (${undefended.worst.name}) undefended, ${((undefended.worst.outcome.accuracy - best.worst.outcome.accuracy) * 100).toFixed(1)} points less`
      : '';
    const tied = [...verdicts].filter(([, v]) => v.startsWith('tied')).map(([f]) => f);
    const untested = [...verdicts].some(([, v]) => v.startsWith('untested'));
    const changes =
      best.defender.top1ChangeRate > 0
        ? ` It changes the top-1 label of ${pct(best.defender.top1ChangeRate)} of the test answers (${(best.defender.accuracyLoss * 100).toFixed(2)} points of accuracy): that is what denies the top-1 attacker the clean labels.`
        : Number.isNaN(best.defender.top1ChangeRate)
          ? ''
          : ' It changes no top-1 label on the test set.';
    recommendation =
      `Recommended within ${budgetText}, on the worst case: ${settingLabel(best, short)}: the strongest of ${best.cells.length} attacker${best.cells.length === 1 ? '' : 's'} (${best.worst.name}) still reaches ${accuracyText(best.worst.outcome)}${cut}.` +
      (tied.length ? ` Statistically tied with it (Welch's t-test, 5%): ${tied.join(', ')}.` : '') +
      (untested ? ' One seed: the ranking is untested.' : '') +
      changes;
  }
  const top1Undefended = undefended?.cells.find((c) => c.policy === 'random' && c.labels === 'argmax') ?? undefended?.cells.find((c) => c.labels === 'argmax');
  const keeping = rows.filter((r) => r.family !== 'none' && r.keepsTop1);
  const measuredTop1 = rows.some((r) => r.cells.some((c) => c.labels === 'argmax'));
  let top1Note =
    'A defense that keeps every top-1 label cannot beat the top-1 attacker, by construction: that attacker trains on the argmax of the answers, which are then exactly the undefended labels (what the argmax defense gives).';
  if (top1Undefended)
    top1Note += ` Against no defense the top-1 attacker reaches ${accuracyText(top1Undefended.outcome)}: no top-1-keeping defense's worst case can fall below it.`;
  if (keeping.length) {
    const list = keeping.map((r) => `${settingLabel(r, short)}${r.queryTop1Changed === undefined ? '' : ' (0 of the attacker’s queries changed)'}`).join(', ');
    top1Note += ` Here ${keeping.length === 1 ? 'this setting changed' : 'these settings changed'} no top-1 label on the test set: ${list}.`;
  }
  if (!measuredTop1) top1Note += ' This grid did not train the top-1 attacker ("attackerLabels": ["soft", "argmax"] adds it): its worst case leaves it out.';
  return {
    budget,
    columns: attackerColumns(rows.flatMap((r) => r.cells.map((c) => c.record))),
    rows,
    choices,
    verdicts,
    undefended,
    recommended,
    recommendation,
    top1Note,
  };
}
