/**
 * The shadow attacker's gauges and counters, on the serving metrics' registry and prefix. Labels
 * from bounded sets only: `answers` (defended | original), `tier` (the configured tiers, "default"
 * for the default defense), `on` (held_out | held_back), `result`, `reason`. Never a client.
 *
 * With `msd proxy --workers N` each worker runs its own shadow on its share of the traffic: the
 * ratios are averaged over the workers that have one, the counts summed.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { getOrCreateMetric } from '../metrics.js';

export type ShadowAnswers = 'defended' | 'original';
export type AgreementSet = 'held_out' | 'held_back';

export interface ShadowMetrics {
  /** Top-1 accuracy of the knockoff trained on each kind of answer, on the held-out labels. */
  readonly accuracy: Gauge<'answers' | 'tier'>;
  /** Top-1 agreement of each knockoff with the model's original answers. */
  readonly agreement: Gauge<'answers' | 'tier' | 'on'>;
  /** Accuracy of the knockoff on the original answers minus that on the defended ones. */
  readonly protection: Gauge<'tier'>;
  /** The owner's threshold for the protection alert: registered only when set (an unlabelled gauge would read 0 otherwise). */
  minProtection(): Gauge<string>;
  /** Rows the last round's knockoffs learned from. */
  readonly trainingRows: Gauge<'tier'>;
  /** The model's own accuracy on the held-out set: registered only when its answers there are given. */
  modelAccuracy(): Gauge<string>;
  /** Top-1 accuracy of the defended answers on the held-out set, per tier (needs the model's answers there). */
  readonly defendedAccuracy: Gauge<'tier'>;
  readonly rounds: Counter<'result'>;
  readonly trainSeconds: Counter<string>;
  readonly lastRound: Gauge<string>;
  readonly sampledRows: Counter<'tier'>;
  readonly skippedRows: Counter<'reason'>;
  readonly reservoirRows: Gauge<'tier'>;
}

/** Registers every shadow metric (the lazy ones too): what the dashboard and the alerts may read. */
export function registerAllShadowMetrics(registry: Registry, prefix: string): ShadowMetrics {
  const metrics = createShadowMetrics(registry, prefix);
  metrics.minProtection();
  metrics.modelAccuracy();
  return metrics;
}

export function createShadowMetrics(registry: Registry, prefix: string): ShadowMetrics {
  const p = `${prefix}shadow_`;
  return {
    accuracy: getOrCreateMetric(registry, Gauge<'answers' | 'tier'>, {
      name: `${p}attacker_accuracy_ratio`,
      help: 'Shadow knockoff top-1 accuracy on the owner’s held-out set, trained on the defended or the original answers of sampled requests (0..1)',
      labelNames: ['answers', 'tier'],
      aggregator: 'average',
    }),
    agreement: getOrCreateMetric(registry, Gauge<'answers' | 'tier' | 'on'>, {
      name: `${p}attacker_agreement_ratio`,
      help: 'Shadow knockoff top-1 agreement with the model’s original answers, on held-back sampled requests or on the held-out set (0..1)',
      labelNames: ['answers', 'tier', 'on'],
      aggregator: 'average',
    }),
    protection: getOrCreateMetric(registry, Gauge<'tier'>, {
      name: `${p}protection_ratio`,
      help: 'Shadow knockoff accuracy on the original answers minus on the defended answers (what the defense denies an attacker; -1..1)',
      labelNames: ['tier'],
      aggregator: 'average',
    }),
    minProtection: () =>
      getOrCreateMetric(registry, Gauge<string>, {
        name: `${p}protection_min_ratio`,
        help: 'The owner’s threshold: the protection alert fires below it',
        labelNames: [],
        aggregator: 'max',
      }),
    trainingRows: getOrCreateMetric(registry, Gauge<'tier'>, {
      name: `${p}training_rows`,
      help: 'Sampled rows the shadow knockoffs of the last round learned from',
      labelNames: ['tier'],
      aggregator: 'sum',
    }),
    modelAccuracy: () =>
      getOrCreateMetric(registry, Gauge<string>, {
        name: `${p}model_accuracy_ratio`,
        help: 'The model’s own top-1 accuracy on the held-out set (from its answers there, when given; 0..1)',
        labelNames: [],
        aggregator: 'average',
      }),
    defendedAccuracy: getOrCreateMetric(registry, Gauge<'tier'>, {
      name: `${p}defended_accuracy_ratio`,
      help: 'Top-1 accuracy of the defended answers on the held-out set (the utility a benign client gets; 0..1)',
      labelNames: ['tier'],
      aggregator: 'average',
    }),
    rounds: getOrCreateMetric(registry, Counter<'result'>, {
      name: `${p}rounds_total`,
      help: 'Shadow training rounds, by result (done, failed)',
      labelNames: ['result'],
    }),
    trainSeconds: getOrCreateMetric(registry, Counter<string>, {
      name: `${p}train_seconds_total`,
      help: 'CPU seconds the shadow’s worker thread spent training and scoring (Linux: the thread’s own CPU time; elsewhere its working wall time, an upper bound)',
      labelNames: [],
    }),
    lastRound: getOrCreateMetric(registry, Gauge<string>, {
      name: `${p}last_round_timestamp_seconds`,
      help: 'When the last shadow round finished (Unix seconds)',
      labelNames: [],
      aggregator: 'max',
    }),
    sampledRows: getOrCreateMetric(registry, Counter<'tier'>, {
      name: `${p}sampled_rows_total`,
      help: 'Rows of answered requests the shadow sampled (offered to its reservoir)',
      labelNames: ['tier'],
    }),
    skippedRows: getOrCreateMetric(registry, Counter<'reason'>, {
      name: `${p}skipped_rows_total`,
      help: 'Sampled rows the shadow could not use, by reason (unreadable inputs, shape unlike the held-out rows)',
      labelNames: ['reason'],
    }),
    reservoirRows: getOrCreateMetric(registry, Gauge<'tier'>, {
      name: `${p}reservoir_rows`,
      help: 'Rows the shadow holds in memory now, training and held-back parts together',
      labelNames: ['tier'],
      aggregator: 'sum',
    }),
  };
}
