/**
 * A tiny deterministic ClientDetection for the serving tests (the real detectors live in
 * src/detection): counts answered rows, escalates at `escalateAt`, throttles at `throttleAt`,
 * refuses at `refuseAt` (a throttle that paces with `paced`). Evidence carries the count only.
 */
import type { Assessment, ClientAction, ClientDetection, ClientObservation, ClientState } from '../../../src/detection/types.js';

export interface CountPolicy {
  escalateAt?: number;
  throttleAt?: number;
  refuseAt?: number;
  tier?: string;
  retryAfterSeconds?: number;
  /** The throttle paces (as a ladder `throttle:SECONDS` step does), its answers with `tier`. */
  paced?: boolean;
}

interface CountState {
  queries: number;
  action: ClientAction;
}

/** `record: false` keeps no observations (benchmarks). */
export function countDetection(policy: CountPolicy, options: { record?: boolean } = {}): ClientDetection & { observed: ClientObservation[] } {
  const record = options.record ?? true;
  const observed: ClientObservation[] = [];
  const actionFor = (queries: number): ClientAction =>
    policy.refuseAt !== undefined && queries >= policy.refuseAt
      ? 'refuse'
      : policy.throttleAt !== undefined && queries >= policy.throttleAt
        ? 'throttle'
        : policy.escalateAt !== undefined && queries >= policy.escalateAt
          ? 'escalate'
          : 'default';
  const assessment = (queries: number, changed: boolean): Assessment => {
    const action = actionFor(queries);
    return {
      action,
      tier: action === 'escalate' ? policy.tier : undefined,
      retryAfterSeconds: action === 'throttle' ? (policy.retryAfterSeconds ?? 30) : undefined,
      ...(action === 'throttle' && policy.paced ? { paced: { seconds: policy.retryAfterSeconds ?? 30, ...(policy.tier ? { tier: policy.tier } : {}) } } : {}),
      changed,
      verdicts: [{ detector: 'count', flagged: action !== 'default', score: queries, evidence: { queries } }],
    };
  };
  return {
    observed,
    initialState: (): ClientState => ({ queries: 0, action: 'default' }),
    observe(state, observation) {
      if (record) observed.push(observation);
      const s = state as unknown as CountState;
      const queries = s.queries + 1;
      const action = actionFor(queries);
      return { state: { queries, action }, assessment: assessment(queries, action !== s.action) };
    },
    assess(state) {
      return assessment((state as unknown as CountState).queries, false);
    },
  };
}
