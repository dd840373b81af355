/**
 * Options of surrogate batching, validated once at construction: how long a batch waits for company
 * (windowMs), how many rows one forward pass takes (maxBatchRows), how many rows may wait before new
 * requests are refused with 503 (maxQueueRows), and the largest request accepted (maxRowsPerRequest, 413).
 */
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

const NAMES = Object.keys(BATCHING_DEFAULTS);

function checkNumber(value: unknown, name: string, min: number, integer: boolean): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new ServingOptionError(
      `batching.${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}, got ${JSON.stringify(value)}; e.g. ${name}: ${BATCHING_DEFAULTS[name as keyof ResolvedBatching]}`,
    );
  }
}

export function resolveBatching(options: BatchingOptions = {}): ResolvedBatching {
  if (!options || typeof options !== 'object') throw new ServingOptionError('batching must be an object such as { windowMs: 2, maxBatchRows: 32 }');
  const unknown = Object.keys(options).filter((key) => !NAMES.includes(key));
  if (unknown.length) throw new ServingOptionError(`unknown batching option(s) ${unknown.join(', ')}; allowed: ${NAMES.join(', ')}`);
  const resolved = { ...BATCHING_DEFAULTS };
  for (const name of NAMES as (keyof ResolvedBatching)[]) {
    const value = options[name];
    if (value === undefined) continue;
    checkNumber(value, name, name === 'windowMs' ? 0 : 1, name !== 'windowMs');
    resolved[name] = value;
  }
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
