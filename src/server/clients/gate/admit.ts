/**
 * Admission: identity → the client's assessment (store read, `assess(state, now)`) → refuse (403),
 * throttle (429 + Retry-After) or go on, before any model work; a paced client goes on when it takes
 * its slot (refusal.ts).
 */
import type { IncomingMessage } from 'node:http';
import type { Assessment } from '../../../detection/types.js';
import type { ClientTicket } from '../gate.js';
import { countAction, logChange } from './actions.js';
import type { GateContext } from './context.js';
import { stronger } from './outage-flags.js';
import { ClientRefusal, refusalFor, takeSlot } from './refusal.js';

export async function admit(ctx: GateContext, req: IncomingMessage): Promise<ClientTicket> {
  const { identity: client, raw } = ctx.identify(req);
  if (client.anonymous && ctx.refuseAnonymous)
    throw new ClientRefusal('a client identity is required (see the server’s clients.identity)', 401, 'unidentified');
  const time = ctx.now();
  const { value: state, degraded } = await ctx.stores.use(undefined, 'read', (store) => store.get(client.id));
  const cohort = ctx.above?.cohortOf(req, raw);
  const ticket: ClientTicket = { client, degraded, fresh: !degraded && state === undefined, ...(cohort !== undefined ? { cohort } : {}) };
  let assessment: Assessment | undefined = state === undefined ? undefined : ctx.detection.assess(state, time);
  if (degraded) {
    // The shared store is out: what it last said of this client still holds (refused stays refused).
    assessment = stronger(assessment, ctx.flags.recalled(client.id, time));
  } else if (ticket.fresh) {
    ctx.flags.forget(client.id);
  } else {
    ctx.flags.remember(client.id, assessment!, time);
  }
  if (assessment === undefined) return ticket;
  // A change by time alone (a throttle that ran out) is logged here, where it is first seen.
  const previous = ctx.actions.previous(client.id);
  if (previous !== undefined && (previous.action !== assessment.action || previous.tier !== assessment.tier))
    logChange(ctx, client.id, assessment, previous.action);
  ctx.actions.note(client.id, assessment);
  let refusal = refusalFor(assessment);
  if (refusal && assessment.paced) {
    // A ladder throttle paces: the request that takes the slot goes on (observe serves it the paced tier).
    refusal = await takeSlot(ctx, ticket, client.id, assessment.paced.seconds);
    if (!refusal) {
      ticket.paced = true;
      return ticket;
    }
  }
  if (refusal) {
    countAction(ctx.metrics, assessment);
    if (!degraded) await keepAlive(ctx, client.id);
    throw refusal;
  }
  return ticket;
}

/**
 * A refused or throttled request is the client's latest: its record lives on from it, so a thief that
 * keeps knocking stays refused instead of being forgotten ttlMs after its last answered query. The
 * refusal stands whatever the store says (a failure here is counted as the store's, nothing more).
 */
async function keepAlive(ctx: GateContext, id: string): Promise<void> {
  try {
    await ctx.stores.use(undefined, 'keep-alive', (store) => store.keepAlive(id));
  } catch {
    // The store's fail mode turned its failure into a 503: this request is refused already.
  }
}
