/**
 * Folds the seeded runs of one setting (same defense, policy and budget; attacker seeds varied,
 * victim fixed) into one record: means, with 95% Student-t half-widths and the per-seed values kept
 * for Welch's test. The report's tables and plots read these records.
 */
import type { AnswerQuality, AttackerOutcome, RestorerReport, RunRecord } from '../records/run-record.js';
import { confidenceInterval, mean } from '../records/stats.js';

function settingKey(record: RunRecord): string {
  return `${record.spec}\u0000${record.policy}\u0000${record.budget}`;
}

/** One record per setting, in order of first appearance. Records that are already aggregates pass through. */
export function aggregateRuns(records: readonly RunRecord[]): RunRecord[] {
  const groups = new Map<string, RunRecord[]>();
  for (const record of records) {
    const group = groups.get(settingKey(record)) ?? [];
    group.push(record);
    groups.set(settingKey(record), group);
  }
  return [...groups.values()].map((group) => {
    if (group.length === 1 && group[0].seeds !== undefined) return group[0];
    const runs = [...group].sort((a, b) => (a.attackerSeed ?? 0) - (b.attackerSeed ?? 0));
    const first = runs[0];
    const attackers: AttackerOutcome[] = first.attackers.map((outcome) => {
      const same = runs.map((r) => r.attackers.find((a) => a.labels === outcome.labels)).filter((a): a is AttackerOutcome => a !== undefined);
      const accuracy = confidenceInterval(same.map((a) => a.accuracy));
      const agreement = confidenceInterval(same.map((a) => a.agreement));
      return {
        labels: outcome.labels,
        accuracy: accuracy.mean,
        agreement: agreement.mean,
        accuracyHalfWidth: accuracy.halfWidth,
        agreementHalfWidth: agreement.halfWidth,
        accuracies: same.map((a) => a.accuracy),
      };
    });
    const avg = (f: (r: RunRecord) => number) => mean(runs.map(f));
    const qualities = runs.map((r) => r.answerQuality).filter((q): q is AnswerQuality => q !== undefined);
    const restorers = runs.map((r) => r.restorer).filter((q): q is RestorerReport => q !== undefined);
    const meanOf = <T extends object>(items: T[]): T | undefined =>
      items.length === 0
        ? undefined
        : (Object.fromEntries(Object.keys(items[0]).map((k) => [k, mean(items.map((i) => (i as Record<string, number>)[k]))])) as T);
    return {
      ...first,
      key: runs.map((r) => r.key).join(' '),
      defender: {
        accuracy: avg((r) => r.defender.accuracy),
        accuracyLoss: avg((r) => r.defender.accuracyLoss),
        l1Mean: avg((r) => r.defender.l1Mean),
        l1Median: avg((r) => r.defender.l1Median),
        top1ChangeRate: avg((r) => r.defender.top1ChangeRate),
      },
      attackers,
      queries: avg((r) => r.queries),
      requests: avg((r) => r.requests),
      seconds: avg((r) => r.seconds),
      seeds: runs.length,
      answerQuality: meanOf(qualities),
      restorer: meanOf(restorers),
    };
  });
}
