/** The admin route's listings: the suspicious clients (most severe action, highest score first), the cohorts and the population views. */
import type { Assessment } from '../../../detection/types.js';
import type { CohortSummary, PopulationOverview } from '../above/above-client.js';
import { COHORT_PREFIX } from '../above/cohort.js';
import type { SuspiciousClient } from '../gate.js';
import type { StoredClient } from '../store.js';
import { SEVERITY } from './actions.js';
import type { GateContext } from './context.js';

const topScore = (assessment: Assessment): number => assessment.verdicts.reduce((m, v) => Math.max(m, Number.isFinite(v.score) ? v.score : 0), 0);

const listed = async (ctx: GateContext): Promise<StoredClient[]> => (await ctx.stores.use(undefined, 'list', (store) => store.list(10_000))).value;

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
  return suspiciousOf(ctx, await listed(ctx), limit);
}

export async function overview(
  ctx: GateContext,
  limit: number,
): Promise<{ clients: SuspiciousClient[]; cohorts?: CohortSummary[]; population?: PopulationOverview }> {
  const stored = await listed(ctx);
  const clients = suspiciousOf(ctx, stored, limit);
  if (!ctx.above) return { clients };
  return { clients, ...ctx.above.overview(stored, ctx.now(), limit) };
}
