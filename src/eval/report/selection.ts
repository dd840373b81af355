/**
 * Reading the grid the way the model owner asks: at a given utility cost (points of defender
 * accuracy), which setting of each defense family hurts the attacker most?
 */
import { POLICIES, type AttackerLabels, type PolicyName } from '../config.js';
import type { AttackerOutcome, RunRecord } from '../records/run-record.js';
import { welchTest } from '../records/stats.js';

/** The default utility budget: 1 point of defender accuracy. */
export const DEFAULT_MAX_ACCURACY_LOSS = 0.01;

export function attackerOutcome(record: RunRecord, labels: AttackerLabels): AttackerOutcome | undefined {
  return record.attackers.find((a) => a.labels === labels);
}

/** The policies present, random first (the reference policy of the plots). */
export function policiesOf(records: readonly RunRecord[]): PolicyName[] {
  const present = new Set(records.map((r) => r.policy));
  return POLICIES.filter((p) => present.has(p));
}

export function labelsOf(records: readonly RunRecord[]): AttackerLabels[] {
  const present = new Set(records.flatMap((r) => r.attackers.map((a) => a.labels)));
  return (['soft', 'argmax'] as const).filter((l) => present.has(l));
}

export function largestBudget(records: readonly RunRecord[]): number {
  return records.reduce((max, r) => Math.max(max, r.budget), 0);
}

/** Records grouped by defense family, families in order of first appearance. */
export function byFamily(records: readonly RunRecord[]): Map<string, RunRecord[]> {
  const groups = new Map<string, RunRecord[]>();
  for (const record of records) {
    const group = groups.get(record.defense) ?? [];
    group.push(record);
    groups.set(record.defense, group);
  }
  return groups;
}

export interface FamilyChoice {
  family: string;
  /** The family's setting that leaves the attacker weakest within the utility budget; undefined if none fits. */
  best?: RunRecord;
  /** How many of the family's settings were measured, and how many fit the budget. */
  settings: number;
  withinBudget: number;
}

/**
 * Per family, among the runs of one policy and budget, the setting within `maxLoss` of defender
 * accuracy loss that gives the lowest accuracy to the `labels` attacker.
 */
export function bestWithinUtility(
  records: readonly RunRecord[],
  policy: PolicyName,
  budget: number,
  labels: AttackerLabels,
  maxLoss = DEFAULT_MAX_ACCURACY_LOSS,
): FamilyChoice[] {
  const candidates = records.filter((r) => r.policy === policy && r.budget === budget && attackerOutcome(r, labels));
  return [...byFamily(candidates)].map(([family, runs]) => {
    // A tiny tolerance so a loss of exactly one point (0.0100000001 in floats) still counts.
    const fitting = runs.filter((r) => r.defender.accuracyLoss <= maxLoss + 1e-9);
    const best = fitting.reduce<RunRecord | undefined>(
      (acc, r) => (!acc || attackerOutcome(r, labels)!.accuracy < attackerOutcome(acc, labels)!.accuracy ? r : acc),
      undefined,
    );
    return { family, best, settings: runs.length, withinBudget: fitting.length };
  });
}

/**
 * How each family's chosen setting compares with the one that leaves the attacker weakest (lowest
 * mean accuracy): Welch's two-sided t-test on the per-seed attacker accuracies at the 5% level.
 * "tied" means the difference is not significant; with one seed there is nothing to test.
 */
export function comparedWithStrongest(choices: readonly FamilyChoice[], labels: AttackerLabels): Map<string, string> {
  const candidates = choices.filter((c) => c.best && c.family !== 'none');
  const strongest = candidates.reduce<FamilyChoice | undefined>(
    (acc, c) => (!acc || attackerOutcome(c.best!, labels)!.accuracy < attackerOutcome(acc.best!, labels)!.accuracy ? c : acc),
    undefined,
  );
  const verdicts = new Map<string, string>();
  if (!strongest) return verdicts;
  const samples = (c: FamilyChoice) => attackerOutcome(c.best!, labels)!.accuracies ?? [];
  for (const choice of candidates) {
    if (choice === strongest) {
      verdicts.set(choice.family, 'strongest');
      continue;
    }
    const test = welchTest(samples(strongest), samples(choice));
    verdicts.set(
      choice.family,
      test === undefined ? 'untested (one seed)' : `${test.p >= 0.05 ? 'tied' : 'weaker'} (p=${test.p < 0.001 ? '<0.001' : test.p.toFixed(3)})`,
    );
  }
  return verdicts;
}

export interface PolicyComparison {
  spec: string;
  budget: number;
  labels: AttackerLabels;
  random: AttackerOutcome;
  adaptive: AttackerOutcome;
  /** 'adaptive stronger', 'random stronger' or 'tied' at 5% (Welch), with p; 'untested (one seed)'. */
  verdict: string;
}

/**
 * Does the adaptive (bandit) attacker beat random sampling? For every setting and budget measured
 * with both policies, Welch's two-sided t-test on the per-seed attacker accuracies at 5%: the
 * published Knockoff gain does not carry over to every pool, so the report says what was measured.
 */
export function adaptiveAgainstRandom(records: readonly RunRecord[]): PolicyComparison[] {
  const comparisons: PolicyComparison[] = [];
  for (const adaptiveRun of records.filter((r) => r.policy === 'adaptive')) {
    const randomRun = records.find((r) => r.policy === 'random' && r.spec === adaptiveRun.spec && r.budget === adaptiveRun.budget);
    if (!randomRun) continue;
    for (const labels of labelsOf([randomRun, adaptiveRun])) {
      const random = attackerOutcome(randomRun, labels);
      const adaptive = attackerOutcome(adaptiveRun, labels);
      if (!random || !adaptive) continue;
      const test = welchTest(adaptive.accuracies ?? [], random.accuracies ?? []);
      const p = test && (test.p < 0.001 ? '<0.001' : test.p.toFixed(3));
      const verdict = test === undefined ? 'untested (one seed)' : test.p >= 0.05 ? `tied (p=${p})` : `${test.t > 0 ? 'adaptive' : 'random'} stronger (p=${p})`;
      comparisons.push({ spec: adaptiveRun.spec, budget: adaptiveRun.budget, labels, random, adaptive, verdict });
    }
  }
  return comparisons;
}
