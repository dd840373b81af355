/**
 * Reading the grid the way the model owner asks: at a given utility cost (points of defender
 * accuracy), which setting of each defense family hurts the attacker most?
 */
import { POLICIES, type AttackerLabels, type PolicyName } from '../config.js';
import type { AttackerOutcome, RunRecord } from '../results.js';

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
export function bestWithinUtility(records: readonly RunRecord[], policy: PolicyName, budget: number, labels: AttackerLabels, maxLoss = DEFAULT_MAX_ACCURACY_LOSS): FamilyChoice[] {
  const candidates = records.filter((r) => r.policy === policy && r.budget === budget && attackerOutcome(r, labels));
  return [...byFamily(candidates)].map(([family, runs]) => {
    // A tiny tolerance so a loss of exactly one point (0.0100000001 in floats) still counts.
    const fitting = runs.filter((r) => r.defender.accuracyLoss <= maxLoss + 1e-9);
    const best = fitting.reduce<RunRecord | undefined>((acc, r) => (!acc || attackerOutcome(r, labels)!.accuracy < attackerOutcome(acc, labels)!.accuracy ? r : acc), undefined);
    return { family, best, settings: runs.length, withinBudget: fitting.length };
  });
}
