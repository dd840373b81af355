/**
 * Options of surrogate batching, validated once at construction: how long a batch waits for company
 * (windowMs), how many rows one forward pass takes (maxBatchRows), how many rows may wait before new
 * requests are refused with 503 (maxQueueRows), and the largest request accepted (maxRowsPerRequest, 413).
 */
import { z } from 'zod';
import { integerAtLeast, numberIn, optionStyle, parseOptions } from '../../validation/index.js';
import { ServingOptionError } from '../errors.js';

export interface BatchingOptions {
  /** Milliseconds the first request of a batch waits for others to join it, once requests have shared a pass (a lone client never waits). Default 2; 0 dispatches on the next turn. */
  windowMs?: number;
  /** Rows per forward pass; a larger request is split into chunks of this size. Default 32. */
  maxBatchRows?: number;
  /** Rows waiting (queued, not yet computed) past which new requests get 503 with Retry-After. Default 16384. */
  maxQueueRows?: number;
  /** Rows one request may carry; more is refused with 413 before any work. Default 4096. */
  maxRowsPerRequest?: number;
}

export type ResolvedBatching = Required<BatchingOptions>;

export const BATCHING_DEFAULTS: ResolvedBatching = { windowMs: 2, maxBatchRows: 32, maxQueueRows: 16_384, maxRowsPerRequest: 4096 };

const batchingSchema = z.strictObject(
  {
    windowMs: numberIn({ min: 0 }, `a number ≥ 0 (ms), e.g. windowMs: ${BATCHING_DEFAULTS.windowMs}`).optional(),
    maxBatchRows: integerAtLeast(1, `an integer ≥ 1, e.g. maxBatchRows: ${BATCHING_DEFAULTS.maxBatchRows}`).optional(),
    maxQueueRows: integerAtLeast(1, `an integer ≥ 1, e.g. maxQueueRows: ${BATCHING_DEFAULTS.maxQueueRows}`).optional(),
    maxRowsPerRequest: integerAtLeast(1, `an integer ≥ 1, e.g. maxRowsPerRequest: ${BATCHING_DEFAULTS.maxRowsPerRequest}`).optional(),
  } satisfies Record<keyof BatchingOptions, z.ZodType>,
  { error: 'an object such as { windowMs: 2, maxBatchRows: 32 }' },
);

const style = optionStyle(ServingOptionError, 'batching', {
  unknownKeys: (_name, keys, allowed) => `unknown batching option(s) ${keys.join(', ')}; allowed: ${allowed.join(', ')}`,
});

export function resolveBatching(options: BatchingOptions = {}): ResolvedBatching {
  const given = parseOptions(batchingSchema, options, style);
  const resolved: ResolvedBatching = { ...BATCHING_DEFAULTS };
  for (const [name, value] of Object.entries(given) as [keyof ResolvedBatching, number | undefined][]) if (value !== undefined) resolved[name] = value;
  if (resolved.windowMs > 1000)
    throw new ServingOptionError(`batching.windowMs is ${resolved.windowMs}: a window over 1000 ms delays every request by that much; use a few milliseconds`);
  // A request larger than the queue could never be admitted: say so now rather than 503 forever.
  if (resolved.maxRowsPerRequest > resolved.maxQueueRows) {
    throw new ServingOptionError(
      `batching.maxRowsPerRequest (${resolved.maxRowsPerRequest}) exceeds maxQueueRows (${resolved.maxQueueRows}); such a request could never be queued: raise maxQueueRows or lower maxRowsPerRequest`,
    );
  }
  return resolved;
}
