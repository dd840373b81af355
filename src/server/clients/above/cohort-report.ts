/** What the gate reports of cohorts: a change of a cohort's action (logged and counted), and the admin route's listing. */
import type { Logger } from 'pino';
import type { Assessment, ClientDetection, DetectorVerdict } from '../../../detection/types.js';
import type { PopulationMetrics } from '../metrics.js';
import type { StoredClient } from '../store.js';
import { COHORT_PREFIX } from './cohort.js';

export interface CohortSummary {
  id: string;
  action: Assessment['action'];
  score: number;
  verdicts: readonly DetectorVerdict[];
}

const topScore = (verdicts: readonly DetectorVerdict[]): number => verdicts.reduce((m, v) => Math.max(m, Number.isFinite(v.score) ? v.score : 0), 0);

/** Logs and counts a cohort's change of action (nothing when it did not change). */
export function noteCohortChange(report: { metrics: PopulationMetrics; logger?: Logger; tier?: string }, cohortId: string, assessment: Assessment): void {
  if (!assessment.changed) return;
  report.metrics.cohortChanges.inc({ action: assessment.action });
  const flagged = assessment.verdicts.filter((v) => v.flagged).map((v) => v.detector);
  report.logger?.warn(
    {
      cohort: cohortId,
      action: assessment.action,
      tier: assessment.action === 'default' ? undefined : report.tier,
      reason: flagged.length ? `flagged by ${flagged.join(', ')}` : 'no detector flags the cohort now',
      evidence: Object.fromEntries(assessment.verdicts.map((v) => [v.detector, { flagged: v.flagged, score: v.score, ...v.evidence }])),
    },
    'cohort action changed',
  );
}

/** The cohorts among the stored entries, the most severe action and highest score first (none without cohort detection). */
export function listCohorts(cohortDetection: ClientDetection | undefined, stored: readonly StoredClient[], time: number, limit: number): CohortSummary[] {
  const cohorts: CohortSummary[] = [];
  if (cohortDetection) {
    for (const { id, state } of stored) {
      if (!id.startsWith(COHORT_PREFIX)) continue;
      const a = cohortDetection.assess(state, time);
      cohorts.push({ id: id.slice(COHORT_PREFIX.length), action: a.action, score: topScore(a.verdicts), verdicts: a.verdicts });
    }
    const severity = { default: 0, escalate: 1, throttle: 2, refuse: 3 } as const;
    cohorts.sort((x, y) => severity[y.action] - severity[x.action] || y.score - x.score);
  }
  return cohorts.slice(0, limit);
}
