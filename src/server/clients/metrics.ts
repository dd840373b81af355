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
    actions: getOrCreateMetric(registry, Counter<'action' | 'detector'>, {
      name: `${prefix}client_actions_total`,
      help: 'Requests on which a detection action (escalate, throttle, refuse) was applied',
      labelNames: ['action', 'detector'],
    }),
    actionChanges: getOrCreateMetric(registry, Counter<'action' | 'detector'>, {
      name: `${prefix}client_action_changes_total`,
      help: 'Changes of a client’s action, by new action and flagging detector',
      labelNames: ['action', 'detector'],
    }),
    evaluations: getOrCreateMetric(registry, Counter<'detector' | 'flagged'>, {
      name: `${prefix}detector_evaluations_total`,
      help: 'Detector evaluations, by detector and verdict',
      labelNames: ['detector', 'flagged'],
    }),
    storeErrors: getOrCreateMetric(registry, Counter<'store' | 'operation'>, {
      name: `${prefix}client_store_errors_total`,
      help: 'Client store operations that failed (outage, timeout, contention)',
      labelNames: ['store', 'operation'],
    }),
    degraded: getOrCreateMetric(registry, Counter<string>, {
      name: `${prefix}client_store_fallback_total`,
      help: 'Requests served from local fallback state because the client store failed',
      labelNames: [],
    }),
    unreadableInputs: getOrCreateMetric(registry, Counter<string>, {
      name: `${prefix}client_unreadable_inputs_total`,
      help: 'Requests refused (400) because client detection needs their inputs and could not read them',
      labelNames: [],
    }),
    newIdentities: getOrCreateMetric(registry, Counter<string>, {
      name: `${prefix}client_new_identities_total`,
      help: 'Client identities observed for the first time (the store held no state for them)',
      labelNames: [],
    }),
    probation: getOrCreateMetric(registry, Counter<string>, {
      name: `${prefix}client_probation_total`,
      help: 'Answers given the probation tier because new identities came over the limit',
      labelNames: [],
    }),
  };
}

/** Metrics of detection above the client: views, reasons and actions are bounded sets; no client or cohort id in any label. */
export interface PopulationMetrics {
  /** Alarms that started, by view (all, young). */
  readonly alarms: Counter<'view'>;
  /** Answers given the probation tier by detection above the client, by reason (young, suspect, cohort). */
  readonly probation: Counter<'reason'>;
  /** Changes of a cohort's action. */
  readonly cohortChanges: Counter<'action'>;
  /** Rows whose fingerprint matched a query of another identity. */
  readonly fingerprintMatches: Counter<string>;
  /** Fingerprint store generations that filled (their later new hashes are not all kept). */
  readonly fingerprintGenerationsFull: Counter<string>;
}

export interface PopulationGauges {
  /** Per view: alarm on, and each detector's score (unsure share, distances, match share) as of the last judgement. */
  views(): Record<string, { alarm: boolean; scores: Record<string, number> }>;
  /** Fingerprint hashes held (memory; Redis: the current generation). */
  fingerprintEntries(): number | undefined;
}

export function createPopulationMetrics(serving: ServingMetrics, gauges: PopulationGauges): PopulationMetrics {
  const { registry, prefix } = serving;
  getOrCreateMetric(registry, Gauge<'view'>, {
    name: `${prefix}population_alarm`,
    help: 'Whether the population alarm of a view (all identities, young identities) holds (1) or not (0)',
    labelNames: ['view'],
    collect(this: Gauge<'view'>) {
      for (const [view, status] of Object.entries(gauges.views())) this.set({ view }, status.alarm ? 1 : 0);
    },
  });
  getOrCreateMetric(registry, Gauge<'view' | 'detector'>, {
    name: `${prefix}population_score`,
    help: 'Population detectors’ scores per view as of the last judgement: unsure share (ood), hardness distance (hoda), class distance (classes), fingerprint match share (matches)',
    labelNames: ['view', 'detector'],
    collect(this: Gauge<'view' | 'detector'>) {
      for (const [view, status] of Object.entries(gauges.views()))
        for (const [detector, score] of Object.entries(status.scores)) this.set({ view, detector }, score);
    },
  });
  getOrCreateMetric(registry, Gauge<string>, {
    name: `${prefix}fingerprint_entries`,
    help: 'Query fingerprint hashes held by the fingerprint store (Redis: its current generation)',
    labelNames: [],
    collect(this: Gauge<string>) {
      const entries = gauges.fingerprintEntries();
      if (entries !== undefined) this.set(entries);
    },
  });
  return {
    alarms: getOrCreateMetric(registry, Counter<'view'>, {
      name: `${prefix}population_alarms_total`,
      help: 'Population alarms started, by view',
      labelNames: ['view'],
    }),
    probation: getOrCreateMetric(registry, Counter<'reason'>, {
      name: `${prefix}population_probation_total`,
      help: 'Answers given the probation tier by cohort or population detection, by reason (young, suspect, cohort)',
      labelNames: ['reason'],
    }),
    cohortChanges: getOrCreateMetric(registry, Counter<'action'>, {
      name: `${prefix}cohort_action_changes_total`,
      help: 'Changes of a cohort’s action, by new action',
      labelNames: ['action'],
    }),
    fingerprintMatches: getOrCreateMetric(registry, Counter<string>, {
      name: `${prefix}fingerprint_matches_total`,
      help: 'Query rows whose fingerprint matched a query of another identity',
      labelNames: [],
    }),
    fingerprintGenerationsFull: getOrCreateMetric(registry, Counter<string>, {
      name: `${prefix}fingerprint_generations_full_total`,
      help: 'Fingerprint store generations that filled (memory: rotated early, reported at most once per ttl/2; Redis: a write refused, once per generation across replicas)',
      labelNames: [],
    }),
  };
}
