/**
 * Metrics of client detection. No client id appears in any label: actions, detectors and stores
 * are bounded sets. The clients-by-action gauge is this process's view (clients it has seen).
 */
import { Counter, Gauge } from 'prom-client';
import type { ClientAction } from '../../detection/types.js';
import { getOrCreateMetric, type ServingMetrics } from '../metrics.js';

export interface ClientMetrics {
  /** Requests on which a non-default action was applied, by action and the detector that flagged. */
  readonly actions: Counter<'action' | 'detector'>;
  /** Changes of a client's action, by the new action and the detector that flagged. */
  readonly actionChanges: Counter<'action' | 'detector'>;
  readonly evaluations: Counter<'detector' | 'flagged'>;
  readonly storeErrors: Counter<'store' | 'operation'>;
  /** Requests answered from the local fallback state while the shared store was out. */
  readonly degraded: Counter<string>;
  /** Requests refused because a detector needs their inputs and they could not be read. */
  readonly unreadableInputs: Counter<string>;
  /** Identities the store held no state for (new, or forgotten) at admission. */
  readonly newIdentities: Counter<string>;
  /** Answers given the probation tier (new identities over the limit, client without history). */
  readonly probation: Counter<string>;
}

export const CLIENT_ACTIONS: readonly ClientAction[] = ['default', 'escalate', 'throttle', 'refuse'];

export function createClientMetrics(serving: ServingMetrics, countByAction: () => Record<ClientAction, number>): ClientMetrics {
  const { registry, prefix } = serving;
  getOrCreateMetric(registry, Gauge<'action'>, {
    name: `${prefix}clients_by_action`,
    help: 'Clients seen by this process, by their current action',
    labelNames: ['action'],
    collect(this: Gauge<'action'>) {
      const counts = countByAction();
      for (const action of CLIENT_ACTIONS) this.set({ action }, counts[action]);
    },
  });
  return {
    actions: getOrCreateMetric(registry, Counter<'action' | 'detector'>, { name: `${prefix}client_actions_total`, help: 'Requests on which a detection action (escalate, throttle, refuse) was applied', labelNames: ['action', 'detector'] }),
    actionChanges: getOrCreateMetric(registry, Counter<'action' | 'detector'>, { name: `${prefix}client_action_changes_total`, help: 'Changes of a client’s action, by new action and flagging detector', labelNames: ['action', 'detector'] }),
    evaluations: getOrCreateMetric(registry, Counter<'detector' | 'flagged'>, { name: `${prefix}detector_evaluations_total`, help: 'Detector evaluations, by detector and verdict', labelNames: ['detector', 'flagged'] }),
    storeErrors: getOrCreateMetric(registry, Counter<'store' | 'operation'>, { name: `${prefix}client_store_errors_total`, help: 'Client store operations that failed (outage, timeout, contention)', labelNames: ['store', 'operation'] }),
    degraded: getOrCreateMetric(registry, Counter<string>, { name: `${prefix}client_store_fallback_total`, help: 'Requests served from local fallback state because the client store failed', labelNames: [] }),
    unreadableInputs: getOrCreateMetric(registry, Counter<string>, { name: `${prefix}client_unreadable_inputs_total`, help: 'Requests refused (400) because client detection needs their inputs and could not read them', labelNames: [] }),
    newIdentities: getOrCreateMetric(registry, Counter<string>, { name: `${prefix}client_new_identities_total`, help: 'Client identities the store held no state for at admission', labelNames: [] }),
    probation: getOrCreateMetric(registry, Counter<string>, { name: `${prefix}client_probation_total`, help: 'Answers given the probation tier because new identities came over the limit', labelNames: [] }),
  };
}
