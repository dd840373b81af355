/**
 * The new-identity rule: identities new to the store per minute (this process's count, a sliding
 * window over two one-minute buckets, counted at an identity's first observation); above the limit,
 * clients with little history get a tier until the rate falls to 80% of it.
 */
import type { Logger } from 'pino';
import type { ClientDetection } from '../../../detection/types.js';
import type { Defense } from '../../../defenses/index.js';
import { ServingOptionError } from '../../errors.js';
import { passesProbabilities } from '../above/above-config.js';
import type { ClientMetrics } from '../metrics.js';
import type { ClientsOptions } from '../options.js';

/** Defaults of the new-identity rule (clients.newClients). */
export const NEW_CLIENTS_DEFAULTS = { maxPerMinute: 600, historyQueries: 50 } as const;

const MINUTE = 60_000;
/** A flood ends when the rate falls to this share of the limit: a rate hovering at the limit does not flap. */
const RELEASE = 0.8;

/** The first escalation tier of the detection's own policy ladder, when it exposes one (createClientDetection does). */
function firstPolicyTier(detection: ClientDetection): string | undefined {
  const steps = (detection as { config?: { policy?: { steps?: readonly { action: string; tier?: string }[] } } }).config?.policy?.steps;
  return Array.isArray(steps) ? steps.find((step) => step.action === 'escalate')?.tier : undefined;
}

export class NewIdentityRule {
  /** The rule's limits (undefined: newClients is false). */
  readonly limits: { readonly maxPerMinute: number; readonly historyQueries: number } | undefined;
  private readonly tierName: string | undefined;
  /** The tier of clients on probation (undefined: the rule is off). */
  readonly tier: Defense | undefined;
  private bucket = 0;
  private current = 0;
  private previous = 0;
  private flooding = false;

  constructor(
    options: ClientsOptions<never>,
    tiers: ReadonlyMap<string, Defense>,
    private readonly metrics: ClientMetrics,
    private readonly logger?: Logger,
  ) {
    const limits = options.newClients === false ? undefined : { ...NEW_CLIENTS_DEFAULTS, ...(options.newClients ?? {}) };
    this.limits = limits;
    const policyTier = firstPolicyTier(options.detection);
    this.tierName = limits
      ? ((options.newClients ? options.newClients.tier : undefined) ??
        options.escalationTier ??
        (policyTier !== undefined ? (options.tierNames?.[policyTier] ?? policyTier) : undefined))
      : undefined;
    const named = this.tierName !== undefined ? tiers.get(this.tierName) : undefined;
    // A tier that hands out the model's probabilities would make probation no defense at all.
    const passes = named !== undefined && passesProbabilities(named);
    if (passes) {
      if (options.newClients && options.newClients.tier !== undefined)
        throw new ServingOptionError(
          `clients.newClients.tier "${this.tierName}" (${named.spec}) passes the model's probabilities through (all, some, or rescaled), so probation would not defend: name a tier such as "mad-argmax:eps=0.8" or "argmax"`,
        );
      logger?.warn({ tier: this.tierName }, 'new-identity rule off: its tier passes the model probabilities through (set clients.newClients.tier)');
    }
    this.tier = passes ? undefined : named;
    if (limits && options.newClients && !this.tier) {
      throw new ServingOptionError(
        `clients.newClients needs a tier for clients on probation: set newClients.tier (or escalationTier) to one of tiers (${[...tiers.keys()].join(', ') || 'none configured'}), or newClients: false`,
      );
    }
    if (limits && !this.tier)
      logger?.info({ tiers: [...tiers.keys()] }, 'new-identity rule off: no tier to give new clients (set clients.newClients.tier or escalationTier)');
  }

  /** Counts an identity new to the store at `time`. */
  noteNewIdentity(time: number): void {
    this.metrics.newIdentities.inc();
    this.rate(time);
    this.current++;
    this.floodAt(time);
  }

  /** New identities are coming faster than the limit at `time` (a change is logged). */
  floodAt(time: number): boolean {
    if (!this.limits || !this.tier) return false;
    const rate = this.rate(time);
    const over = this.flooding ? rate > RELEASE * this.limits.maxPerMinute : rate > this.limits.maxPerMinute;
    if (over !== this.flooding) {
      if (over)
        this.logger?.warn(
          { newPerMinute: Math.round(rate), limit: this.limits.maxPerMinute, tier: this.tierName, historyQueries: this.limits.historyQueries },
          'new client identities over the limit: clients with little history get the probation tier',
        );
      else this.logger?.info({ newPerMinute: Math.round(rate), limit: this.limits.maxPerMinute }, 'new client identities back under the limit');
    }
    this.flooding = over;
    return over;
  }

  /** New identities in the last minute at `time` (the previous minute's count weighed by its share still in the window). */
  private rate(time: number): number {
    const start = Math.floor(time / MINUTE) * MINUTE;
    if (start !== this.bucket) {
      this.previous = start - this.bucket === MINUTE ? this.current : 0;
      this.current = 0;
      this.bucket = start;
    }
    return this.previous * (1 - (time - start) / MINUTE) + this.current;
  }
}
