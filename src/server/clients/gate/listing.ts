/**
 * The admin route's listings: the suspicious clients (most severe action, highest score first), the
 * cohorts and the population views.
 *
 * A listing reads a bounded number of states, LISTING_READ_FACTOR times the clients it shows (at most
 * MAX_LISTED of them): a state can be tens of kilobytes, and reading the whole store per dashboard
 * refresh could exhaust the serving process's memory. Both stores list the highest rank first (the
 * action when the state was last written: refused, throttled, escalated, clean), the most recently
 * active first within a rank; an action weakens, not strengthens, between writes (windows expire),
 * so the read holds the most severe clients and misses only the least recently active ones of the
 * last rank it reaches. Cohorts share the store and the read: a flagged cohort comes with the flagged
 * clients; a clean one is listed while it is among the most recently active clean entries.
 */
import type { Assessment } from '../../../detection/types.js';
import type { CohortSummary, PopulationOverview } from '../above/above-client.js';
import { COHORT_PREFIX } from '../above/cohort.js';
import type { SuspiciousClient } from '../gate.js';
import type { StoredClient } from '../store.js';
import { SEVERITY } from './actions.js';
import type { GateContext } from './context.js';

/** Most clients (and cohorts) one listing shows; a larger limit shows this many. */
export const MAX_LISTED = 500;
/** States read per client shown: room for the clients whose action weakened since their last write, and for the cohorts. */
export const LISTING_READ_FACTOR = 4;

const topScore = (assessment: Assessment): number => assessment.verdicts.reduce((m, v) => Math.max(m, Number.isFinite(v.score) ? v.score : 0), 0);

const shown = (limit: number): number => Math.max(0, Math.min(MAX_LISTED, Math.floor(limit) || 0));

const listed = async (ctx: GateContext, limit: number): Promise<StoredClient[]> => {
  const reads = Math.max(1, limit * LISTING_READ_FACTOR);
  return (await ctx.stores.use(undefined, 'list', (store) => store.list(reads))).value;
};

function suspiciousOf(ctx: GateContext, stored: readonly StoredClient[], limit: number): SuspiciousClient[] {
  const time = ctx.now();
  return stored
    .filter(({ id }) => !id.startsWith(COHORT_PREFIX))
    .map(({ id, state }) => {
      const a = ctx.detection.assess(state, time);
      return { id, action: a.action, tier: a.tier, score: topScore(a), verdicts: a.verdicts };
    })
    .sort((x, y) => SEVERITY[y.action] - SEVERITY[x.action] || y.score - x.score)
    .slice(0, limit);
}

export async function suspicious(ctx: GateContext, limit: number): Promise<SuspiciousClient[]> {
  const count = shown(limit);
  return suspiciousOf(ctx, await listed(ctx, count), count);
}

export async function overview(
  ctx: GateContext,
  limit: number,
): Promise<{ clients: SuspiciousClient[]; cohorts?: CohortSummary[]; population?: PopulationOverview }> {
  const count = shown(limit);
  const stored = await listed(ctx, count);
  const clients = suspiciousOf(ctx, stored, count);
  if (!ctx.above) return { clients };
  return { clients, ...ctx.above.overview(stored, ctx.now(), count) };
}
