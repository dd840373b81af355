/**
 * The policy: a ladder of steps above the default (tiers of stronger defenses, then optionally throttle
 * and refuse), climbed with hysteresis so that a client does not flap:
 * - up one step when a detector flags (the first at once, each further one after `stepQueries` more
 *   queries with a detector still flagging);
 * - down one step only after every detector's level has stayed below `release` (a fraction of its flag
 *   threshold) for `calmQueries` queries or for `calmMs`, the clock restarting after each step down;
 * - between `release` and the flag threshold nothing moves.
 * The query budget is applied on top: when the window is full the client is throttled (or refused)
 * whatever the ladder says.
 *
 * A ladder throttle paces: one request each SECONDS is still answered (with the nearest tier below the
 * throttle) and observed, so the ladder can move on from it; the budget's throttle stops the client
 * until its window has room.
 */
import type { ClientAction } from './types.js';

export type PolicyStep =
  | { readonly action: 'escalate'; readonly tier: string }
  | { readonly action: 'throttle'; readonly retryAfterSeconds: number }
  | { readonly action: 'refuse' };

export interface PolicyConfig {
  readonly steps: readonly PolicyStep[];
  /** Calm when every detector's level (score / flag threshold) is below this. */
  readonly release: number;
  readonly stepQueries: number;
  readonly calmQueries: number;
  readonly calmMs: number;
}

export interface PolicyState {
  /** 0: default; i: steps[i − 1]. */
  readonly level: number;
  /** Queries seen (all rows). */
  readonly queries: number;
  /** Query count at the last step. */
  readonly steppedAt: number;
  /** Query count and time at which the current calm run began; -1 when not calm. */
  readonly calmQ: number;
  readonly calmT: number;
  /** The last effective action and tier (for `changed`). */
  readonly action: ClientAction;
  readonly tier: string;
}

export function initialPolicyState(): PolicyState {
  return { level: 0, queries: 0, steppedAt: 0, calmQ: -1, calmT: -1, action: 'default', tier: '' };
}

/** The ladder after an observation of `rows` queries with these detector findings. */
export function stepPolicy(config: PolicyConfig, state: PolicyState, time: number, rows: number, anyFlagged: boolean, maxLevel: number): PolicyState {
  const queries = state.queries + rows;
  let { level, steppedAt, calmQ, calmT } = state;
  if (anyFlagged) {
    calmQ = -1;
    calmT = -1;
    if (level === 0 || (level < config.steps.length && queries - steppedAt >= config.stepQueries)) {
      level = Math.min(config.steps.length, level + 1);
      steppedAt = queries;
    }
  } else if (maxLevel < config.release) {
    if (calmQ < 0) {
      calmQ = state.queries;
      calmT = time;
    }
    if (level > 0 && (queries - calmQ >= config.calmQueries || time - calmT >= config.calmMs)) {
      level--;
      steppedAt = queries;
      calmQ = queries;
      calmT = time;
    }
  } else {
    calmQ = -1;
    calmT = -1;
  }
  return { ...state, level, queries, steppedAt, calmQ, calmT };
}

/** The level an assessment at `time` sees without a new query: the calm clock may have run out. */
export function levelAt(config: PolicyConfig, state: PolicyState, time: number, maxLevel: number): number {
  if (state.level > 0 && state.calmT >= 0 && maxLevel < config.release && time - state.calmT >= config.calmMs) return state.level - 1;
  return state.level;
}

export interface Decision {
  readonly action: ClientAction;
  readonly tier?: string;
  readonly retryAfterSeconds?: number;
  /** A ladder throttle: one request each `seconds` goes on with `tier` (see Assessment.paced). */
  readonly paced?: { readonly seconds: number; readonly tier?: string };
}

/** The nearest escalation tier below step `level` (1-based), if any. */
function tierBelow(config: PolicyConfig, level: number): string | undefined {
  for (let i = level - 2; i >= 0; i--) {
    const step = config.steps[i];
    if (step.action === 'escalate') return step.tier;
  }
  return undefined;
}

const STRENGTH: Record<ClientAction, number> = { default: 0, escalate: 1, throttle: 2, refuse: 3 };

/** The ladder's step at `level` combined with the budget (the stronger wins; throttles take the longer wait). */
export function decide(config: PolicyConfig, level: number, budget: Decision | undefined): Decision {
  const step = level > 0 ? config.steps[level - 1] : undefined;
  let ladder: Decision = { action: 'default' };
  if (step?.action === 'escalate') ladder = { action: 'escalate', tier: step.tier };
  else if (step?.action === 'throttle') {
    const tier = tierBelow(config, level);
    ladder = {
      action: 'throttle',
      retryAfterSeconds: step.retryAfterSeconds,
      paced: { seconds: step.retryAfterSeconds, ...(tier !== undefined ? { tier } : {}) },
    };
  } else if (step?.action === 'refuse') ladder = { action: 'refuse' };
  if (!budget) return ladder;
  if (budget.action === 'throttle' && ladder.action === 'throttle') {
    // The budget's window is full: nothing goes on until it has room, paced or not.
    return { action: 'throttle', retryAfterSeconds: Math.max(budget.retryAfterSeconds ?? 1, ladder.retryAfterSeconds ?? 1) };
  }
  return STRENGTH[budget.action] > STRENGTH[ladder.action] ? budget : ladder;
}
