/** One observation through a client detection, as a store update: what the detection throws becomes the answer's error. */
import type { Logger } from 'pino';
import { DetectionInputError } from '../../../detection/errors.js';
import type { Assessment, ClientDetection, ClientObservation, ClientState } from '../../../detection/types.js';
import { AnswerFormatError, ServingError } from '../../errors.js';
import { SEVERITY } from './actions.js';

/**
 * What detection.observe throws is no store failure: an observation it rejects is the answer's
 * fault (502 behind the proxy), anything else a detection failure (500, its cause logged, not told).
 */
function detectionFailure(error: unknown, logger: Logger | undefined): ServingError {
  if (error instanceof DetectionInputError) return new AnswerFormatError(`model answer: client detection cannot use it (${error.message}), so it was withheld`);
  logger?.error({ err: (error as Error)?.message ?? String(error) }, 'client detection failed');
  return new ServingError('client detection failed, so the answer was withheld', 500, 'defense_failed');
}

/** `judge.observe` from `state` (or a new one), its failure turned into the answer's error. */
export function observeWith(
  judge: ClientDetection,
  state: ClientState | undefined,
  observation: ClientObservation,
  logger: Logger | undefined,
): ReturnType<ClientDetection['observe']> {
  try {
    return judge.observe(state ?? judge.initialState(observation.time), observation);
  } catch (error) {
    throw detectionFailure(error, logger);
  }
}

/**
 * The store update of one observation: the new state, the assessment, the history (queries) after it,
 * and whether the store held no state before (the identity's first observation: an atomic update, so
 * true once per identity however many of its requests run at once).
 */
export const detectionStep = (judge: ClientDetection, observation: ClientObservation, logger: Logger | undefined) => (state: ClientState | undefined) => {
  const observed = observeWith(judge, state, observation, logger);
  const history = judge.history ? judge.history(observed.state) : undefined;
  return {
    state: observed.state,
    result: { assessment: observed.assessment, history, created: state === undefined },
    rank: SEVERITY[observed.assessment.action],
  };
};

/** The store update of several observations in order: the last state, every assessment. */
export const batchStep =
  (judge: ClientDetection, observations: readonly ClientObservation[], logger: Logger | undefined) => (state: ClientState | undefined) => {
    let current = state;
    const assessments: Assessment[] = [];
    for (const observation of observations) {
      const observed = observeWith(judge, current, observation, logger);
      current = observed.state;
      assessments.push(observed.assessment);
    }
    return { state: current!, result: assessments, rank: SEVERITY[assessments[assessments.length - 1].action] };
  };
