/**
 * Requests the gate refuses before (or instead of) their answer, and the pacing of a ladder throttle:
 * a client on a `throttle:SECONDS` step has one request each SECONDS answered (with the ladder's tier
 * below the throttle) and observed, so that its ladder can move on; the others get 429 with the time
 * left. The pace is per row: a request of n rows keeps the slot n × SECONDS. The slot is taken in the store, atomically across replicas with Redis, so a burst at the
 * moment it frees gets one answer, not one per request or per replica.
 */
import type { Assessment } from '../../../detection/types.js';
import { ServingError } from '../../errors.js';
import type { GateContext } from './context.js';

/** A request refused before (or instead of) its answer: status, message and headers (Retry-After). */
export class ClientRefusal extends ServingError {
  override name = 'ClientRefusal';
  constructor(
    message: string,
    status: number,
    outcome: 'client_refused' | 'client_throttled' | 'unidentified' | 'store_unavailable',
    override readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message, status, outcome, headers);
  }
}

/** A throttle's 429, Retry-After in whole seconds (at least 1). */
export function throttled(seconds: number): ClientRefusal {
  const wait = Math.max(1, Math.ceil(seconds));
  return new ClientRefusal(`this client is throttled; retry after ${wait} s`, 429, 'client_throttled', { 'retry-after': String(wait) });
}

/** The refusal (403) or throttle (429 + Retry-After) an assessment calls for; undefined: the request goes on. */
export function refusalFor(assessment: Assessment): ClientRefusal | undefined {
  if (assessment.action === 'refuse') return new ClientRefusal('this client is refused: its queries look like model extraction', 403, 'client_refused');
  if (assessment.action === 'throttle') return throttled(assessment.retryAfterSeconds ?? 60);
  return undefined;
}

/** Takes the client's slot: undefined when taken (the request goes on), else the 429 with the time until it frees. */
export async function takeSlot(ctx: GateContext, ticket: { readonly degraded: boolean }, id: string, seconds: number): Promise<ClientRefusal | undefined> {
  const { value: waitMs } = await ctx.stores.use(ticket, 'reserve', (store) => store.reserve(id, seconds * 1000));
  return waitMs > 0 ? throttled(waitMs / 1000) : undefined;
}

/** Keeps the client's slot taken `seconds` from now (a paced request of several rows), never less than it was. */
export async function holdSlot(ctx: GateContext, ticket: { readonly degraded: boolean }, id: string, seconds: number): Promise<void> {
  await ctx.stores.use(ticket, 'hold', (store) => store.hold(id, seconds * 1000));
}

/** What a paced answer is served and counted as: the tier below the throttle, or the default. */
export function pacedAnswer(assessment: Assessment): Assessment {
  const tier = assessment.paced?.tier;
  return {
    action: tier !== undefined ? 'escalate' : 'default',
    ...(tier !== undefined ? { tier } : {}),
    changed: assessment.changed,
    verdicts: assessment.verdicts,
  };
}
