/**
 * The gate's way to its stores: the shared Redis store when there is one, else (and on its failure
 * in "local" mode) this process's memory store. An outage is counted on every failure and logged
 * once, where it starts and where it ends, for each part of the shared Redis on its own: the client
 * store, the population counts and the fingerprints fail apart (a fingerprint script that times out
 * while the client updates go through), so one part's success never ends another's outage.
 */
import type { Logger } from 'pino';
import { ServingError } from '../../errors.js';
import type { ClientMetrics } from '../metrics.js';
import type { StoreFailMode } from '../options.js';
import type { ClientStore } from '../store.js';
import type { MemoryClientStore } from '../store-memory.js';
import type { RedisClientStore } from '../store-redis.js';
import { ClientRefusal } from './refusal.js';

export interface StoreAnswer<T> {
  value: T;
  /** The shared store failed (for this operation, or at the request's admission). */
  degraded: boolean;
  /** Answered by the local store after the shared one failed. */
  local?: boolean;
}

/** The parts of the shared Redis whose outages are logged apart. */
export type StorePart = 'clients' | 'population' | 'fingerprints';

/** What the outage lines call each part. */
const PART_NAMES: Record<StorePart, string> = {
  clients: 'client store',
  population: 'shared population counts',
  fingerprints: 'shared fingerprint store',
};

export class StoreAccess {
  readonly kind: 'memory' | 'redis';
  private readonly outages = new Set<StorePart>();

  constructor(
    /** The only store in memory mode, the fallback in Redis mode. */
    readonly local: MemoryClientStore,
    readonly shared: Promise<RedisClientStore> | undefined,
    private readonly failMode: StoreFailMode,
    private readonly metrics: ClientMetrics,
    private readonly logger?: Logger,
  ) {
    this.kind = shared ? 'redis' : 'memory';
  }

  /** Counts a failure of `part`; logs it when the part's outage starts. */
  failed(operation: string, error: unknown, part: StorePart = 'clients'): void {
    this.metrics.storeErrors.inc({ store: this.kind, operation });
    if (this.outages.has(part)) return;
    this.outages.add(part);
    // The fail mode is the client store's; without the other parts the gate goes on with this process's counts and unmatched rows.
    const failMode = part === 'clients' ? { failMode: this.failMode } : {};
    this.logger?.error({ store: this.kind, part, operation, ...failMode, err: (error as Error)?.message }, `${PART_NAMES[part]} unavailable`);
  }

  /** `part` answered; logs the end of its outage, if it had one. */
  worked(part: StorePart = 'clients'): void {
    if (this.outages.delete(part)) this.logger?.info({ store: this.kind, part }, `${PART_NAMES[part]} available again`);
  }

  /** Reads through the shared store, or the local one; on a shared-store failure, the fail mode decides. */
  async use<T>(ticket: { readonly degraded: boolean } | undefined, operation: string, run: (store: ClientStore) => Promise<T>): Promise<StoreAnswer<T>> {
    if (!this.shared) return { value: await run(this.local), degraded: false };
    try {
      const value = await run(await this.shared);
      this.worked();
      return { value, degraded: ticket?.degraded ?? false };
    } catch (error) {
      // Not the store: a refusal, or an answer the detectors cannot use (see the detection step).
      if (error instanceof ServingError) throw error;
      this.failed(operation, error);
      if (this.failMode === 'refuse')
        throw new ClientRefusal('the client store is unavailable, so the request was refused; retry later', 503, 'store_unavailable', { 'retry-after': '5' });
      this.metrics.degraded.inc();
      return { value: await run(this.local), degraded: true, local: true };
    }
  }
}
