/**
 * Metrics of surrogate batching, on the serving instance's registry with its prefix: rows per forward
 * pass, seconds a request waited for its first forward pass, rows waiting now, and (once per
 * registry) prom-client's default process metrics, which include the event-loop delay
 * (<prefix>nodejs_eventloop_lag_seconds and its percentiles).
 */
import { collectDefaultMetrics, Gauge, Histogram } from 'prom-client';
import { getOrCreateMetric as getOrCreate, type ServingMetrics } from '../metrics.js';
import type { BatcherObserver } from './batcher.js';

/** Which forward pass a batcher runs: the label of its metrics. */
export type BatchedModel = 'surrogate' | 'surrogate_gram' | 'misinformation';

export function batchingObservers(metrics: ServingMetrics, maxBatchRows: number): (model: BatchedModel) => BatcherObserver {
  const { registry, prefix } = metrics;
  const buckets: number[] = [];
  for (let b = 1; b < maxBatchRows; b *= 2) buckets.push(b);
  buckets.push(maxBatchRows);
  const batchRows = getOrCreate(registry, Histogram<'model'>, {
    name: `${prefix}surrogate_batch_rows`,
    help: 'Rows per batched forward pass',
    labelNames: ['model'],
    buckets,
  });
  const queueWait = getOrCreate(registry, Histogram<'model'>, {
    name: `${prefix}surrogate_queue_wait_seconds`,
    help: 'Seconds a request waited from arrival to its first batched forward pass',
    labelNames: ['model'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  });
  const queued = getOrCreate(registry, Gauge<'model'>, {
    name: `${prefix}surrogate_queue_rows`,
    help: 'Rows waiting for a batched forward pass',
    labelNames: ['model'],
  });
  if (!registry.getSingleMetric(`${prefix}nodejs_eventloop_lag_seconds`)) collectDefaultMetrics({ register: registry, prefix });
  return (model) => ({
    batch: (rows) => batchRows.observe({ model }, rows),
    queueWait: (seconds) => queueWait.observe({ model }, seconds),
    queued: (rows) => queued.set({ model }, rows),
  });
}
