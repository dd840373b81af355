/**
 * Prometheus metrics of the serving layer. One registry per middleware or proxy unless the caller
 * passes one; building twice on the same registry reuses the metrics already there. Labels come
 * from bounded sets only: the defense (fixed when the server is built) and the outcome.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import { ServingOptionError, type FailureOutcome } from './errors.js';

export const DEFAULT_METRICS_PREFIX = 'msd_';

/**
 * Outcome of one request, as counted in <prefix>requests_total: 'defended' (a defense rewrote the
 * answer), 'undefended' (answered as the model gave it: defense `none`, or a tier without one),
 * 'fallback_argmax', 'passed_error' (the model's own error answer), or one of the failures.
 */
export type RequestOutcome = 'defended' | 'undefended' | 'fallback_argmax' | 'passed_error' | FailureOutcome;

/** Failures of the client's own making or of the policy (a bad request, an unknown route, a refused client): not the service's errors. */
export const CLIENT_OUTCOMES: readonly RequestOutcome[] = ['bad_request', 'too_large', 'not_found', 'unidentified', 'client_refused', 'client_throttled'];

/** Failures of the service: what an error-rate alert counts (client mistakes and deliberate refusals excluded). */
export const SERVICE_ERROR_OUTCOMES: readonly RequestOutcome[] = [
  'bad_answer',
  'defense_failed',
  'upstream_unavailable',
  'upstream_timeout',
  'store_unavailable',
  'overloaded',
];

export interface ServingMetrics {
  readonly registry: Registry;
  readonly prefix: string;
  readonly requests: Counter<'defense' | 'outcome'>;
  readonly rows: Counter<'defense'>;
  readonly l1: Histogram<'defense'>;
  readonly top1Changes: Counter<'defense'>;
  readonly latency: Histogram<'defense'>;
  readonly utilityLoss: Gauge<'defense'>;
  readonly attackerAccuracy: Gauge<'defense'>;
}

export interface MetricsOptions {
  registry?: Registry;
  /** Prefix of every metric name (default "msd_"); snake_case, ending in "_". */
  prefix?: string;
}

type MetricClass<T> = new (config: never) => T;

/** The metric of that name in the registry (checked to be of that type), or a new one registered there. */
export function getOrCreateMetric<T extends Metric<string>>(
  registry: Registry,
  Kind: MetricClass<T>,
  config: {
    name: string;
    help: string;
    labelNames: readonly string[];
    buckets?: number[];
    collect?: () => void;
    aggregator?: 'sum' | 'max' | 'min' | 'average' | 'first' | 'omit';
  },
): T {
  const existing = registry.getSingleMetric(config.name);
  if (existing) {
    if (!(existing instanceof Kind)) {
      throw new ServingOptionError(`metric ${config.name} already exists in this registry with another type; pass another prefix or registry`);
    }
    return existing as T;
  }
  return new Kind({ ...config, registers: [registry] } as never);
}

export function createServingMetrics(options: MetricsOptions = {}): ServingMetrics {
  const prefix = options.prefix ?? DEFAULT_METRICS_PREFIX;
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix))
    throw new ServingOptionError(`metrics prefix ${JSON.stringify(prefix)} is not a valid Prometheus name prefix; write something like "msd_"`);
  const registry = options.registry ?? new Registry();
  const defense = ['defense'] as const;
  return {
    registry,
    prefix,
    requests: getOrCreateMetric(registry, Counter<'defense' | 'outcome'>, {
      name: `${prefix}requests_total`,
      help: 'Inference requests answered, by defense and outcome',
      labelNames: ['defense', 'outcome'],
    }),
    rows: getOrCreateMetric(registry, Counter<'defense'>, {
      name: `${prefix}perturbed_rows_total`,
      help: 'Probability rows passed through a defense',
      labelNames: defense,
    }),
    l1: getOrCreateMetric(registry, Histogram<'defense'>, {
      name: `${prefix}perturbation_l1`,
      help: 'L1 distance between the model’s and the returned probabilities, per row (0..2)',
      labelNames: defense,
      buckets: [0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1, 1.5, 2],
    }),
    top1Changes: getOrCreateMetric(registry, Counter<'defense'>, {
      name: `${prefix}top1_changes_total`,
      help: 'Rows whose top-1 class the defense changed',
      labelNames: defense,
    }),
    latency: getOrCreateMetric(registry, Histogram<'defense'>, {
      name: `${prefix}defense_duration_seconds`,
      help: 'Time to compute the defense context and apply the defense, per request',
      labelNames: defense,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    }),
    utilityLoss: getOrCreateMetric(registry, Gauge<'defense'>, {
      name: `${prefix}utility_loss_ratio`,
      help: 'Defender accuracy lost to the defense, as measured by the last evaluation (0..1)',
      labelNames: defense,
      aggregator: 'max',
    }),
    attackerAccuracy: getOrCreateMetric(registry, Gauge<'defense'>, {
      name: `${prefix}attacker_accuracy_ratio`,
      help: 'Knockoff attacker top-1 accuracy against the defense, as measured by the last evaluation (0..1)',
      labelNames: defense,
      aggregator: 'max',
    }),
  };
}

export interface EvaluationFigures {
  /** The defense label, as the serving metrics use it (its canonical spec). */
  defense: string;
  /** Defender accuracy lost, 0..1. */
  utilityLoss?: number;
  /** Attacker (knockoff) accuracy, 0..1. */
  attackerAccuracy?: number;
}

/** Publishes the figures an evaluation measured, so one dashboard shows utility lost against attacker accuracy. */
export function recordEvaluation(metrics: ServingMetrics, figures: EvaluationFigures): void {
  for (const [name, value] of [
    ['utilityLoss', figures.utilityLoss],
    ['attackerAccuracy', figures.attackerAccuracy],
  ] as const) {
    if (value === undefined) continue;
    if (!Number.isFinite(value) || value < 0 || value > 1) throw new RangeError(`${name} must be a ratio in [0, 1], got ${value}`);
    metrics[name].set({ defense: figures.defense }, value);
  }
}

/** A request handler (Express or node:http) that serves the registry (or `text`, e.g. a cluster's aggregate) in the Prometheus text format. */
export function metricsHandler(
  registry: Registry,
  text: () => Promise<string> = () => registry.metrics(),
): (req: IncomingMessage, res: ServerResponse) => void {
  return (_req, res) => {
    text().then(
      (text) => {
        res.statusCode = 200;
        res.setHeader('content-type', registry.contentType);
        res.end(text);
      },
      (error: Error) => {
        res.statusCode = 500;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ error: `metrics: ${error.message}` }));
      },
    );
  };
}
