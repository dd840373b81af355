/**
 * What the shared store last said of each flagged client this process saw (refused, throttled,
 * escalated; bounded, the escalated forgotten first): applied through an outage, so that a Redis
 * failure in "local" mode does not serve a refused client again.
 */
import type { Assessment, ClientAction } from '../../../detection/types.js';
import { RankedMap } from '../ranked-map.js';
import { MAX_RANK } from '../store.js';
import { SEVERITY } from './actions.js';

/** What this process last saw the shared store say of a flagged client, kept for an outage. */
interface Remembered {
  readonly action: Exclude<ClientAction, 'default'>;
  readonly tier?: string;
  readonly retryAfterSeconds?: number;
  /** A ladder throttle's pace: through an outage the client stays paced (on this process's slots). */
  readonly paced?: Assessment['paced'];
  /** A detector flagged the client (a throttle from the ladder lasts while flagged; a budget throttle only its Retry-After). */
  readonly flagged: boolean;
  readonly seenAt: number;
}

export class OutageFlags {
  private readonly flags: RankedMap<Remembered>;

  /** `shared`: there is a shared store (without one, nothing is remembered). */
  constructor(
    maxTracked: number,
    private readonly stateTtlMs: number,
    private readonly shared: boolean,
  ) {
    this.flags = new RankedMap(maxTracked, MAX_RANK + 1);
  }

  /** Keeps what the shared store said of `id` (a default action forgets it). */
  remember(id: string, assessment: Assessment, time: number): void {
    if (!this.shared) return;
    if (assessment.action === 'default') {
      this.flags.delete(id);
      return;
    }
    this.flags.set(
      id,
      {
        action: assessment.action,
        tier: assessment.tier,
        retryAfterSeconds: assessment.retryAfterSeconds,
        ...(assessment.paced ? { paced: assessment.paced } : {}),
        flagged: assessment.verdicts.some((v) => v.flagged),
        seenAt: time,
      },
      SEVERITY[assessment.action],
    );
  }

  forget(id: string): void {
    this.flags.delete(id);
  }

  /** The remembered action still in force at `time`, as an assessment (undefined: none). */
  recalled(id: string, time: number): Assessment | undefined {
    const r = this.flags.get(id);
    if (!r || time - r.seenAt >= this.stateTtlMs) return undefined;
    let retryAfterSeconds: number | undefined;
    if (r.action === 'throttle' && r.paced) {
      retryAfterSeconds = r.paced.seconds;
    } else if (r.action === 'throttle') {
      const seconds = r.retryAfterSeconds ?? 60;
      const left = (r.seenAt + seconds * 1000 - time) / 1000;
      // A budget throttle (no detector flagged) ends with its Retry-After; a ladder throttle lasts while flagged.
      if (left <= 0 && !r.flagged) return undefined;
      retryAfterSeconds = left > 0 ? left : seconds;
    }
    const evidence = { ageSeconds: Math.round((time - r.seenAt) / 1000) };
    return {
      action: r.action,
      ...(r.tier !== undefined ? { tier: r.tier } : {}),
      ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}),
      ...(r.paced ? { paced: r.paced } : {}),
      changed: false,
      verdicts: [{ detector: 'remembered', flagged: true, score: 0, evidence }],
    };
  }
}

/** The more severe of two assessments (the first on a tie). */
export const stronger = (a: Assessment | undefined, b: Assessment | undefined): Assessment | undefined =>
  !a ? b : !b ? a : SEVERITY[b.action] > SEVERITY[a.action] ? b : a;
