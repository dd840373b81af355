/**
 * The evaluation's view into the detection the endpoint runs: a ClientDetection that forwards to the
 * real one with a simulated clock (so benign clients can spread their queries over hours in seconds)
 * and records, per client, when each detector first flags and when the policy first escalates.
 * Requests are sent one at a time, so the client being served is the one the driver set as current.
 */
import type { Assessment, ClientDetection, ClientObservation, ClientState } from '../../detection/types.js';

export interface ClientRecord {
  /** Queries (rows) observed so far. */
  queries: number;
  /** Per detector: the query count at which it first flagged (absent: never). */
  firstFlag: Record<string, number>;
  /** Query count of the first action other than the default. */
  firstAction?: number;
  /** The most severe action seen. */
  worstAction: Assessment['action'];
  /** Per detector: its score and evidence at the client's last query (numbers only). */
  last: Record<string, Record<string, number>>;
}

export interface DetectionRecorder {
  detection: ClientDetection;
  /** Sets the client whose request comes next, and the simulated time of that request. */
  next(record: ClientRecord, time: number): void;
}

const SEVERITY = { default: 0, escalate: 1, throttle: 2, refuse: 3 } as const;

export const newRecord = (): ClientRecord => ({ queries: 0, firstFlag: {}, worstAction: 'default', last: {} });

export function recordingDetection(inner: ClientDetection): DetectionRecorder {
  let current: ClientRecord | undefined;
  let now = 0;
  const note = (assessment: Assessment, at: number): void => {
    if (!current) return;
    for (const v of assessment.verdicts) if (v.flagged && current.firstFlag[v.detector] === undefined) current.firstFlag[v.detector] = at;
    if (assessment.action !== 'default' && current.firstAction === undefined) current.firstAction = at;
    if (SEVERITY[assessment.action] > SEVERITY[current.worstAction]) current.worstAction = assessment.action;
    for (const v of assessment.verdicts) current.last[v.detector] = { score: v.score, ...v.evidence };
  };
  const detection: ClientDetection = {
    initialState: () => inner.initialState(now),
    observe(state: ClientState, observation: ClientObservation) {
      const result = inner.observe(state, { ...observation, time: now });
      if (current) {
        current.queries += observation.probs.rows;
        note(result.assessment, current.queries);
      }
      return result;
    },
    assess: (state: ClientState) => inner.assess(state, now),
    // The serving layer reads these too: whether to read the inputs, a client's history (young or not),
    // and the detection's own config and options (the ladder's tiers, HODA's calibration for the population).
    ...(inner.needsInputs !== undefined ? { needsInputs: inner.needsInputs } : {}),
    ...(inner.history ? { history: (state: ClientState) => inner.history!(state) } : {}),
    ...('config' in inner ? { config: (inner as { config: unknown }).config } : {}),
    ...('options' in inner ? { options: (inner as { options: unknown }).options } : {}),
  };
  return {
    detection,
    next(record, time) {
      if (time < now) throw new RangeError(`the simulated clock went back from ${now} to ${time}`);
      current = record;
      now = time;
    },
  };
}
