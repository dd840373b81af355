/**
 * Client actions as this process sees them: their order of severity, the last action (and tier) of
 * each client seen, for the clients-by-action gauge, and the counts and logs of actions and changes.
 */
import type { Logger } from 'pino';
import type { Assessment, ClientAction } from '../../../detection/types.js';
import { CLIENT_ACTIONS, type ClientMetrics } from '../metrics.js';
import { RankedMap } from '../ranked-map.js';
import { MAX_RANK } from '../store.js';

/** Also the store's eviction rank: clean clients are forgotten first, refused ones last. */
export const SEVERITY: Record<ClientAction, number> = { default: 0, escalate: 1, throttle: 2, refuse: 3 };

export const flaggedBy = (assessment: Assessment): string => assessment.verdicts.find((v) => v.flagged)?.detector ?? 'none';

/**
 * Last known action per client seen by this process (bounded like the local store; flagged clients
 * kept longest). With the tier, so that a change is logged once, where this process first sees it.
 */
export class ActionLog {
  private readonly actions: RankedMap<{ action: ClientAction; tier?: string }>;

  constructor(maxTracked: number) {
    this.actions = new RankedMap(maxTracked, MAX_RANK + 1);
  }

  previous(id: string): { action: ClientAction; tier?: string } | undefined {
    return this.actions.get(id);
  }

  note(id: string, { action, tier }: Assessment): void {
    this.actions.set(id, { action, tier }, SEVERITY[action]);
  }

  /** Clients per action, for the gauge. */
  counts(): Record<ClientAction, number> {
    const counts = {} as Record<ClientAction, number>;
    for (const action of CLIENT_ACTIONS) counts[action] = this.actions.count(SEVERITY[action]);
    return counts;
  }
}

/** Counts and logs (with the evidence) a client's change of action. */
export function logChange(
  { metrics, logger }: { metrics: ClientMetrics; logger?: Logger },
  id: string,
  assessment: Assessment,
  previous: ClientAction | undefined,
): void {
  metrics.actionChanges.inc({ action: assessment.action, detector: flaggedBy(assessment) });
  const flagged = assessment.verdicts.filter((v) => v.flagged).map((v) => v.detector);
  logger?.warn(
    {
      client: id,
      action: assessment.action,
      previous,
      tier: assessment.tier,
      retryAfterSeconds: assessment.retryAfterSeconds,
      reason: flagged.length ? `flagged by ${flagged.join(', ')}` : 'no detector flags the client now',
      evidence: Object.fromEntries(assessment.verdicts.map((v) => [v.detector, { flagged: v.flagged, score: v.score, ...v.evidence }])),
    },
    'client action changed',
  );
}

/** Counts an answer's (or refusal's) action other than the default. */
export function countAction(metrics: ClientMetrics, assessment: Assessment): void {
  if (assessment.action !== 'default') metrics.actions.inc({ action: assessment.action, detector: flaggedBy(assessment) });
}
