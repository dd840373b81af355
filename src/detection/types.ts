/**
 * The contract between the pure detectors (this folder: no I/O, no clock of their own, state in plain
 * JSON-serialisable records) and the serving layer's client store (memory or Redis), which holds one
 * `ClientState` per client and runs `observe` inside an atomic update.
 */
import type { ProbBatch } from '../defenses/types.js';

/** What one answered request tells the detectors about its client. */
export interface ClientObservation {
  /** Milliseconds since the epoch, passed in by the caller (detectors read no clock). */
  readonly time: number;
  /** The victim's original probabilities for the request's rows (never stored as such). */
  readonly probs: ProbBatch;
  /** The preprocessed inputs, rows × cols, when available (PRADA needs them; it keeps a down-sampled copy). */
  readonly inputs?: { readonly rows: number; readonly cols: number; readonly data: Float32Array };
  /** Per row, the hardness bin (HODA) when the owner supplied checkpoints; -1 when unknown. */
  readonly hardness?: Int8Array;
  /**
   * Per row, whether its fingerprint matched a query of another identity (the serving layer's shared
   * fingerprint store, when configured): 1 matched, 0 not. Feeds the `fingerprint` detector.
   */
  readonly matches?: Uint8Array;
}

/** One detector's finding, with the evidence a log line or the admin route shows (numbers, never queries). */
export interface DetectorVerdict {
  readonly detector: string;
  readonly flagged: boolean;
  /** Larger means more suspicious; detector-specific scale, documented by each detector. */
  readonly score: number;
  readonly evidence: Readonly<Record<string, number>>;
}

/** What the policy tells the serving layer to do with a client's next answers. */
export type ClientAction = 'default' | 'escalate' | 'throttle' | 'refuse';

export interface Assessment {
  readonly action: ClientAction;
  /** With `escalate`: the defense tier name to use for this client (e.g. "mad-argmax", then "argmax"). */
  readonly tier?: string;
  /** With `throttle`: seconds for Retry-After. */
  readonly retryAfterSeconds?: number;
  /**
   * With a ladder `throttle:SECONDS` step (not the budget's): the throttle paces the client instead of
   * stopping it. One request each `seconds` goes on, answered with `tier` (the ladder's nearest tier
   * below the throttle; none: the default defense) and observed, so that the client can calm down and
   * step down, or keep flagging and step up; the serving layer reserves that one slot atomically and
   * answers the others 429 with the time left.
   */
  readonly paced?: { readonly seconds: number; readonly tier?: string };
  /** Whether the action differs from the one before this observation (log it, count it). */
  readonly changed: boolean;
  readonly verdicts: readonly DetectorVerdict[];
}

/** A client's whole detection state: a plain, JSON-serialisable record (the store persists it as is). */
export type ClientState = Readonly<Record<string, unknown>>;

export interface ClientDetection {
  initialState(time: number): ClientState;
  /** Pure: the new state and the assessment after this observation. */
  observe(state: ClientState, observation: ClientObservation): { state: ClientState; assessment: Assessment };
  /** The assessment of a state without a new observation (before forwarding: refuse/throttle early; expiry by time). */
  assess(state: ClientState, time: number): Assessment;
  /**
   * Whether `observe` reads `observation.inputs` (PRADA does). The serving layer then refuses (400) a
   * request whose inputs it cannot read rather than let the detector go blind. Undefined: assumed true.
   */
  readonly needsInputs?: boolean;
  /** Queries (rows) a state has seen: the client's history, for the serving layer's new-identity rule. */
  history?(state: ClientState): number;
}
