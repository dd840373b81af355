/**
 * A cohort's updates are group-committed: while one is in flight (a Redis round trip), the
 * observations of the cohort's other requests queue and go in the next one, all applied in order in
 * one atomic update. A large cohort (a /24 behind a NAT, a big tenant) is one key that every member's
 * request updates: one at a time, it would serialise them all on the store's round trip.
 */
import type { Logger } from 'pino';
import type { Assessment, ClientDetection, ClientObservation } from '../../../detection/types.js';
import { COHORT_PREFIX } from '../above/cohort.js';
import { batchStep } from './detection-step.js';
import type { StoreAccess } from './store-access.js';

export interface CohortResult {
  assessment: Assessment;
  /** Judged on the local store: the shared one failed. */
  local: boolean;
}

interface CohortWaiter {
  observation: ClientObservation;
  resolve(result: CohortResult): void;
  reject(error: unknown): void;
}

const COHORT_BATCH = 256;

export class CohortQueue {
  private readonly queues = new Map<string, CohortWaiter[]>();

  constructor(
    private readonly stores: StoreAccess,
    private readonly logger: Logger | undefined,
  ) {}

  /** Queues the observation for the ticket's cohort; resolves with its assessment once its batch is written. */
  update(ticket: { readonly degraded: boolean; readonly cohort?: string }, judge: ClientDetection, observation: ClientObservation): Promise<CohortResult> {
    return new Promise((resolve, reject) => {
      const cohort = ticket.cohort!;
      let queue = this.queues.get(cohort);
      const start = !queue;
      if (!queue) this.queues.set(cohort, (queue = []));
      queue.push({ observation, resolve, reject });
      if (start) void this.drain(ticket, cohort, judge, queue);
    });
  }

  private async drain(ticket: { readonly degraded: boolean }, cohort: string, judge: ClientDetection, queue: CohortWaiter[]): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, COHORT_BATCH);
      const step = batchStep(
        judge,
        batch.map((waiter) => waiter.observation),
        this.logger,
      );
      try {
        const { value, local: usedLocal } = await this.stores.use(ticket, 'update', (store) => store.update(COHORT_PREFIX + cohort, step));
        batch.forEach((waiter, i) => waiter.resolve({ assessment: value[i], local: usedLocal === true }));
      } catch (error) {
        for (const waiter of batch) waiter.reject(error);
      }
    }
    this.queues.delete(cohort);
  }
}
