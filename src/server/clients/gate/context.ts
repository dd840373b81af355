/** What the gate's operations share, built once by createClientGate. */
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { Defense } from '../../../defenses/index.js';
import type { ClientDetection } from '../../../detection/types.js';
import type { AboveClient } from '../above/above-client.js';
import type { ClientIdentity } from '../identity.js';
import type { ClientMetrics } from '../metrics.js';
import type { ClientsOptions } from '../options.js';
import type { ActionLog } from './actions.js';
import type { CohortQueue } from './cohort-queue.js';
import type { NewIdentityRule } from './new-identities.js';
import type { OutageFlags } from './outage-flags.js';
import type { StoreAccess } from './store-access.js';

export interface GateContext {
  readonly options: ClientsOptions<never>;
  readonly detection: ClientDetection;
  /** The default defense. */
  readonly defense: Defense;
  readonly tiers: ReadonlyMap<string, Defense>;
  readonly now: () => number;
  readonly logger?: Logger;
  readonly identify: (req: IncomingMessage) => { identity: ClientIdentity; raw: string | undefined };
  readonly refuseAnonymous: boolean;
  /** Cohorts, population views and fingerprints (undefined when none is configured). */
  readonly above: AboveClient | undefined;
  readonly stores: StoreAccess;
  readonly metrics: ClientMetrics;
  readonly actions: ActionLog;
  readonly flags: OutageFlags;
  readonly newIdentities: NewIdentityRule;
  readonly cohorts: CohortQueue;
  /** The detection is given the inputs (clients.observeInputs). */
  readonly observeInputs: boolean;
}
