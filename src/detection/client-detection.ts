/**
 * `createClientDetection(options)`: the detectors (OOD rate, PRADA, HODA), the query budget and the
 * policy behind the `ClientDetection` contract. Pure: the time comes with each call, the state is a
 * plain JSON record (typed arrays as base64), and `observe` returns a new state without touching the old.
 */
import type { ProbBatch } from '../defenses/types.js';
import { resolveOptions, type DetectionConfig, type DetectionOptions } from './config.js';
import { base64Length } from './encoding.js';
import { DetectionInputError } from './errors.js';
import { hodaVerdict, initialHodaState, updateHoda, type HodaState } from './hoda.js';
import { decide, initialPolicyState, levelAt, stepPolicy, type Decision, type PolicyState } from './policy.js';
import { initialPradaState, pradaVerdict, updatePrada, type PradaState } from './prada.js';
import type { Assessment, ClientDetection, ClientObservation, ClientState, DetectorVerdict } from './types.js';
import { budgetRetryAfter, initialWindowState, oodVerdict, updateWindows, type WindowState } from './windows.js';

const STATE_VERSION = 1;

/** The JSON shape of a client's state (what `ClientState` holds). */
export interface DetectionState {
  readonly v: number;
  /** Fingerprint of the detector options: a state written under other options restarts its detectors. */
  readonly cfg: string;
  /** Latest time seen (time never runs backwards for a client). */
  readonly t: number;
  readonly win: WindowState;
  readonly prada?: PradaState;
  readonly hoda?: HodaState;
  /** Fingerprint matches (present once the serving layer sent any): per window bucket, queries and matched. */
  readonly fp?: FingerprintState;
  readonly pol: PolicyState;
}

export interface FingerprintState {
  /** Buckets oldest first: [start, queries, matched]. */
  readonly b: readonly (readonly number[])[];
}

export interface ClientDetectionWithConfig extends ClientDetection {
  readonly config: DetectionConfig;
  /** The options it was built from (to derive a cohort's detection from, see createCohortDetection). */
  readonly options: DetectionOptions;
  /** Upper bound on `JSON.stringify(state).length` (bytes, ASCII) for a victim with `classes` classes. */
  stateSizeBound(classes: number): number;
}

/** A short, stable hash of the options that shape the state. */
function fingerprint(config: DetectionConfig): string {
  const text = JSON.stringify([config.window, config.prada, config.hoda.enabled, config.hoda.thresholds.at(-1)?.length ?? 0]);
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(36);
}

export function createClientDetection(options: DetectionOptions = {}): ClientDetectionWithConfig {
  const config = resolveOptions(options);
  const cfg = fingerprint(config);

  const fresh = (time: number, pol: PolicyState = initialPolicyState()): DetectionState => ({
    v: STATE_VERSION,
    cfg,
    t: time,
    win: initialWindowState(time),
    ...(config.prada.enabled ? { prada: initialPradaState(config.prada) } : {}),
    ...(config.hoda.enabled ? { hoda: initialHodaState(config.hoda) } : {}),
    pol,
  });

  const read = (state: ClientState, time: number): DetectionState => {
    const s = state as unknown as DetectionState;
    if (typeof s !== 'object' || s === null || s.v !== STATE_VERSION || typeof s.pol !== 'object' || typeof s.win !== 'object') {
      throw new DetectionInputError('not a detection state of this version: start the client from initialState(time)');
    }
    // Other options (a restart with a new config): keep the policy's ladder, restart the detectors.
    return s.cfg === cfg ? s : fresh(Math.max(time, s.t), s.pol);
  };

  const verdicts = (s: DetectionState, time: number): { verdicts: DetectorVerdict[]; anyFlagged: boolean; maxLevel: number } => {
    const found: { verdict: DetectorVerdict; level: number }[] = [];
    if (config.ood.enabled) found.push(oodVerdict(config.window, config.ood, s.win, time));
    if (s.prada) found.push(pradaVerdict(config.prada, s.prada));
    if (s.hoda) found.push(hodaVerdict(s.hoda));
    if (s.fp && config.fingerprint.enabled) found.push(fingerprintVerdict(config.fingerprint, liveMatches(s.fp, time, config.window.lengthMs)));
    return {
      verdicts: found.map((f) => f.verdict),
      anyFlagged: found.some((f) => f.verdict.flagged),
      maxLevel: found.reduce((m, f) => Math.max(m, f.level), 0),
    };
  };

  const budgetDecision = (s: DetectionState, time: number): Decision | undefined => {
    if (!config.budget) return undefined;
    const retry = budgetRetryAfter(config.window, s.win, time, config.budget.maxQueries);
    if (retry === 0) return undefined;
    return config.budget.action === 'refuse' ? { action: 'refuse' } : { action: 'throttle', retryAfterSeconds: retry };
  };

  const assessment = (decision: Decision, changed: boolean, found: DetectorVerdict[]): Assessment => ({
    action: decision.action,
    ...(decision.tier !== undefined ? { tier: decision.tier } : {}),
    ...(decision.retryAfterSeconds !== undefined ? { retryAfterSeconds: decision.retryAfterSeconds } : {}),
    ...(decision.paced ? { paced: decision.paced } : {}),
    changed,
    verdicts: found,
  });

  return {
    config,
    options,
    initialState: (time: number) => fresh(checkTime(time)) as unknown as ClientState,

    observe(state: ClientState, observation: ClientObservation) {
      const labels = checkObservation(observation);
      const before = read(state, checkTime(observation.time));
      const time = Math.max(observation.time, before.t);
      const rows = observation.probs.rows;
      const win = updateWindows(config.window, config.ood, before.win, time, observation.probs);
      const prada = before.prada && observation.inputs && rows > 0 ? updatePrada(config.prada, before.prada, observation.inputs, labels) : before.prada;
      const hoda = before.hoda && observation.hardness ? updateHoda(config.hoda, before.hoda, observation.hardness) : before.hoda;
      const fp =
        observation.matches && config.fingerprint.enabled
          ? addMatches(liveMatches(before.fp, time, config.window.lengthMs), time, config.window.bucketMs, observation.matches)
          : before.fp;
      const next: DetectionState = { ...before, t: time, win, ...(prada ? { prada } : {}), ...(hoda ? { hoda } : {}), ...(fp ? { fp } : {}) };
      const found = verdicts(next, time);
      const stepped = stepPolicy(config.policy, before.pol, time, rows, found.anyFlagged, found.maxLevel);
      const decision = decide(config.policy, stepped.level, budgetDecision(next, time));
      const tier = decision.tier ?? '';
      const changed = decision.action !== before.pol.action || tier !== before.pol.tier;
      const pol: PolicyState = { ...stepped, action: decision.action, tier };
      return { state: { ...next, pol } as unknown as ClientState, assessment: assessment(decision, changed, found.verdicts) };
    },

    assess(state: ClientState, time: number) {
      const s = read(state, checkTime(time));
      const at = Math.max(time, s.t);
      const found = verdicts(s, at);
      const level = levelAt(config.policy, s.pol, at, found.maxLevel);
      // assess records nothing, so it never reports a change: the next observe does.
      return assessment(decide(config.policy, level, budgetDecision(s, at)), false, found.verdicts);
    },

    stateSizeBound: (classes: number) => stateSizeBound(config, classes),

    // Only PRADA reads the inputs (HODA gets hardness, computed by the serving layer from them).
    needsInputs: config.prada.enabled,

    history(state: ClientState) {
      const queries = (state as unknown as Partial<DetectionState>)?.pol?.queries;
      return typeof queries === 'number' && Number.isFinite(queries) ? queries : 0;
    },
  };
}

/**
 * The detection of a cohort (the identities sharing an IP prefix, a tenant, a key prefix): the same
 * detectors as per client, without the budget (a cohort holds many honest clients), and a ladder of
 * one step, "cohort": a cohort is alarmed or not, and the serving layer answers its members with the
 * probation tier (which keeps top-1) while it is.
 */
export function createCohortDetection(options: DetectionOptions = {}): ClientDetectionWithConfig {
  return createClientDetection({ ...options, budget: false, policy: { ...options.policy, steps: ['cohort'] } });
}

/** The buckets still inside the window at `time` (as the window's own buckets: start within lengthMs). */
function liveMatches(state: FingerprintState | undefined, time: number, lengthMs: number): FingerprintState {
  return { b: (state?.b ?? []).filter((bucket) => bucket[0] > time - lengthMs) };
}

function addMatches(state: FingerprintState, time: number, bucketMs: number, matches: Uint8Array): FingerprintState {
  let m = 0;
  for (let i = 0; i < matches.length; i++) if (matches[i] > 0) m++;
  const start = Math.floor(time / bucketMs) * bucketMs;
  const buckets = state.b.map((bucket) => [...bucket]);
  const last = buckets[buckets.length - 1];
  if (last && last[0] === start) {
    last[1] += matches.length;
    last[2] += m;
  } else buckets.push([start, matches.length, m]);
  return { b: buckets };
}

function matchTotals(state: FingerprintState): { n: number; m: number } {
  let n = 0;
  let m = 0;
  for (const bucket of state.b) {
    n += bucket[1];
    m += bucket[2];
  }
  return { n, m };
}

/** Flagged once minMatches of the client's queries matched another identity's and their share is above maxShare. */
function fingerprintVerdict(config: DetectionConfig['fingerprint'], state: FingerprintState): { verdict: DetectorVerdict; level: number } {
  const { n, m } = matchTotals(state);
  const share = n > 0 ? m / n : 0;
  const flagged = m >= config.minMatches && share > config.maxShare;
  return {
    verdict: { detector: 'fingerprint', flagged, score: share, evidence: { queries: n, matched: m, share } },
    level: Math.min(m / config.minMatches, share / config.maxShare),
  };
}

function checkTime(time: number): number {
  if (!Number.isFinite(time)) throw new DetectionInputError(`time must be finite milliseconds since the epoch, got ${time}`);
  return time;
}

/** Validates the shapes and returns the victim's label (argmax) per row. */
function checkObservation(observation: ClientObservation): Uint16Array {
  const { probs, inputs, hardness } = observation;
  if (
    !probs ||
    !Number.isInteger(probs.rows) ||
    !Number.isInteger(probs.cols) ||
    probs.rows < 0 ||
    probs.cols < 1 ||
    probs.data.length !== probs.rows * probs.cols
  ) {
    throw new DetectionInputError('observation.probs must be rows × cols with data of rows·cols values');
  }
  if (probs.cols > 65535) throw new DetectionInputError(`observation.probs has ${probs.cols} classes; detection supports at most 65535`);
  if (inputs && (inputs.rows !== probs.rows || inputs.cols < 1 || inputs.data.length !== inputs.rows * inputs.cols)) {
    throw new DetectionInputError(`observation.inputs must have the ${probs.rows} rows of probs and data of rows·cols values`);
  }
  if (hardness && hardness.length !== probs.rows)
    throw new DetectionInputError(`observation.hardness must have one value per row (${probs.rows}), got ${hardness.length}`);
  if (observation.matches && observation.matches.length !== probs.rows)
    throw new DetectionInputError(`observation.matches must have one value per row (${probs.rows}), got ${observation.matches.length}`);
  return labelsOf(probs);
}

function labelsOf(probs: ProbBatch): Uint16Array {
  const labels = new Uint16Array(probs.rows);
  for (let r = 0; r < probs.rows; r++) {
    let best = 0;
    for (let j = 1; j < probs.cols; j++) if (probs.data[r * probs.cols + j] > probs.data[r * probs.cols + best]) best = j;
    labels[r] = best;
  }
  return labels;
}

/** Longest JSON text of one number in the state (a double such as -1.2345678901234567e-300). */
const NUMBER = 25;

/**
 * Upper bound on the serialised state of one client, in bytes: every count is bounded by the options
 * (buckets per window, kept points, distances, hardness ring) and by the number of classes K.
 */
export function stateSizeBound(config: DetectionConfig, classes: number): number {
  const buckets = Math.ceil(config.window.lengthMs / config.window.bucketMs) + 1;
  const windows = 40 + buckets * (13 * (NUMBER + 1) + 2) + classes * (NUMBER + 1);
  let prada = 0;
  if (config.prada.enabled) {
    const width = config.prada.dims;
    const points = Math.min(config.prada.maxKeptPoints, classes * config.prada.maxKeptPerClass);
    prada =
      200 +
      classes * (60 + 5 * (NUMBER + 1) + 4) +
      Math.ceil((16 * width * points) / 3) +
      base64Length(4 * config.prada.maxDistances) +
      base64Length(2 * config.prada.maxDistances) +
      8 * (NUMBER + 8);
  }
  const hoda = config.hoda.enabled ? 80 + base64Length(config.hoda.thresholds.at(-1)!.length) + 6 * (NUMBER + 8) : 0;
  const policy = 120 + 6 * (NUMBER + 12) + 80;
  const fingerprint = config.fingerprint.enabled ? 20 + buckets * (3 * (NUMBER + 1) + 2) : 0;
  return 80 + windows + prada + hoda + fingerprint + policy;
}
