/**
 * Observation: after the answer is read, the model's original probabilities (and inputs) go into
 * the store's atomic update, the client's and, beside it, its cohort's; the new assessment picks
 * this answer's defense (see gate.ts on why the escalation applies to the current answer).
 */
import type { Defense, ProbBatch } from '../../../defenses/index.js';
import type { Assessment, ClientObservation } from '../../../detection/types.js';
import { AnswerFormatError, ServingError } from '../../errors.js';
import type { InputRows } from '../../protocols/index.js';
import type { ProbationReason } from '../above/above-client.js';
import { COHORT_PREFIX } from '../above/cohort.js';
import type { ClientTicket, DefenseOverride } from '../gate.js';
import { countAction, logChange } from './actions.js';
import type { CohortResult } from './cohort-queue.js';
import type { GateContext } from './context.js';
import { detectionStep } from './detection-step.js';
import { hardnessOf } from './inputs.js';
import { stronger } from './outage-flags.js';
import { holdSlot, pacedAnswer, refusalFor, takeSlot } from './refusal.js';

export async function observe(
  ctx: GateContext,
  ticket: ClientTicket,
  probs: ProbBatch,
  inputs: InputRows | undefined,
  chosen: Defense | null,
): Promise<DefenseOverride> {
  const { metrics } = ctx;
  const id = ticket.client.id;
  const time = ctx.now();
  // An answer with other rows than the request is the model's fault, found before the store is touched.
  if (inputs && inputs.rows !== probs.rows) throw new AnswerFormatError(`model answer: ${probs.rows} rows for ${inputs.rows} input rows`);
  const rows = inputs ? { rows: inputs.rows, cols: inputs.cols, data: inputs.data } : undefined;
  const hardness = inputs && ctx.options.hardness ? await hardnessOf(ctx.options.hardness, inputs) : undefined;
  const matching = ctx.above?.matches(id, rows, time);
  const matches = matching instanceof Promise ? await matching : matching;
  const observation = {
    time,
    probs,
    ...(rows && ctx.observeInputs ? { inputs: rows } : {}),
    ...(hardness ? { hardness } : {}),
    ...(matches ? { matches } : {}),
  };
  const previous = ctx.actions.previous(id);
  const [{ value, degraded, local: usedLocal }, cohortResult] = await Promise.all([
    ctx.stores.use(ticket, 'update', (store) => store.update(id, detectionStep(ctx.detection, observation, ctx.logger))),
    startCohortUpdate(ctx, ticket, observation),
  ]);
  // An identity is new at its first observation in the shared (or only) store, not at admission: a
  // request that is never observed (unreadable, upstream failure) or a parallel first one counts no more.
  if (value.created && !usedLocal && !ticket.client.anonymous) ctx.newIdentities.noteNewIdentity(time);
  const cohortAssessment = cohortResult ? settleCohort(ctx, ticket, cohortResult, time) : undefined;
  let assessment: Assessment = value.assessment;
  // Every observed request counts in the population views (escalated and refused clients' too).
  const historyBefore = value.history !== undefined ? value.history - probs.rows : ticket.fresh ? 0 : Infinity;
  const probation = ctx.above?.after({ own: assessment, historyBefore, cohort: cohortAssessment, observation, anonymous: ticket.client.anonymous, time });
  for (const verdict of assessment.verdicts) metrics.evaluations.inc({ detector: verdict.detector, flagged: String(verdict.flagged) });
  if (usedLocal) assessment = stronger(assessment, ctx.flags.recalled(id, time))!;
  else ctx.flags.remember(id, assessment, time);
  ctx.actions.note(id, assessment);
  // `changed` compares with the action at the client's last observation; a change by time alone was
  // already logged at admission (previous then holds the new action and tier), so log it only once.
  if (assessment.changed && (previous?.action !== assessment.action || previous.tier !== assessment.tier)) logChange(ctx, id, assessment, previous?.action);
  let paced = false;
  if (assessment.action === 'throttle' && assessment.paced) {
    // Paced: this answer goes on with the paced tier if its slot was taken at admission, or (a client
    // that reached the throttle with this very request) can be taken now.
    const wait = ticket.paced ? undefined : await takeSlot(ctx, ticket, id, assessment.paced.seconds);
    if (wait) {
      countAction(metrics, assessment);
      throw wait;
    }
    // The pace is per row: a request of n rows holds the slot n times as long.
    if (probs.rows > 1) await holdSlot(ctx, ticket, id, assessment.paced.seconds * probs.rows);
    assessment = pacedAnswer(assessment);
    paced = true;
  }
  countAction(metrics, assessment);
  const refusal = refusalFor(assessment);
  if (refusal) throw refusal;
  if (assessment.action === 'escalate') return tierDefense(ctx, assessment);
  const probationTier = probationDefense(ctx, ticket, probation, value.history, chosen, time);
  if (probationTier) return probationTier;
  // A paced answer without a tier below the throttle: the default defense, whatever chooseDefense chose.
  if (paced) return ctx.defense;
  // Without the shared state, the chosen defense may not be skipped: the default one at least.
  if ((degraded || ticket.degraded) && chosen === null) return ctx.defense;
  return undefined;
}

/** Starts the cohort's update beside the client's (another key of the same store); undefined without a cohort. */
function startCohortUpdate(ctx: GateContext, ticket: ClientTicket, observation: ClientObservation): Promise<CohortResult> | undefined {
  const judge = ticket.cohort !== undefined ? ctx.above?.cohortDetection : undefined;
  if (!judge) return undefined;
  // In memory an update is synchronous: nothing to group.
  if (ctx.stores.shared) return ctx.cohorts.update(ticket, judge, observation);
  return ctx.stores
    .use(ticket, 'update', (store) => store.update(COHORT_PREFIX + ticket.cohort, detectionStep(judge, observation, ctx.logger)))
    .then(({ value, local }): CohortResult => ({ assessment: value.assessment, local: local === true }));
}

/** The cohort's assessment (its change logged by detection above the client). */
function settleCohort(ctx: GateContext, ticket: ClientTicket, result: CohortResult, time: number): Assessment {
  let assessment = result.assessment;
  if (ctx.stores.shared) {
    // Through an outage the cohort is judged on this process's local state, which never saw it
    // flagged: what the shared store last said of it holds, as for a client.
    const cohortId = COHORT_PREFIX + ticket.cohort;
    if (result.local) assessment = stronger(assessment, ctx.flags.recalled(cohortId, time))!;
    else ctx.flags.remember(cohortId, assessment, time);
  }
  ctx.above!.noteCohort(ticket.cohort!, assessment);
  return assessment;
}

/** The escalation tier the detection policy named (renamed by tierNames), or escalationTier. */
function tierDefense(ctx: GateContext, assessment: Assessment): Defense {
  const policyTier = assessment.tier;
  const name = policyTier !== undefined ? (ctx.options.tierNames?.[policyTier] ?? policyTier) : ctx.options.escalationTier;
  const tier = name === undefined ? undefined : ctx.tiers.get(name);
  if (!tier)
    throw new ServingError(
      `the detection policy escalated to tier "${name ?? '(none named)'}", which is not configured in tiers (${[...ctx.tiers.keys()].join(', ') || 'none'})`,
      500,
      'defense_failed',
    );
  return tier;
}

/** The probation tier, when detection above the client or the new-identity rule gives it to this answer; a tier chooseDefense picked for the request stays. */
function probationDefense(
  ctx: GateContext,
  ticket: ClientTicket,
  probation: ProbationReason | undefined,
  history: number | undefined,
  chosen: Defense | null,
  time: number,
): Defense | undefined {
  const keepsChosen = chosen === null || chosen === ctx.defense;
  // Detection above the client: the cohort flagged, or a population alarm and a young (or suspect)
  // client; the probation tier keeps top-1.
  if (ctx.above && probation && ctx.above.probationTier && keepsChosen) {
    ctx.above.countProbation(probation);
    return ctx.above.probationTier;
  }
  // New identities coming fast: a client without history yet gets the probation tier instead of the
  // default defense (or a skipped one).
  const rule = ctx.newIdentities;
  if (rule.tier && rule.limits && keepsChosen && !ticket.client.anonymous) {
    if ((history ?? (ticket.fresh ? 0 : Infinity)) < rule.limits.historyQueries && rule.floodAt(time)) {
      ctx.metrics.probation.inc();
      return rule.tier;
    }
  }
  return undefined;
}
