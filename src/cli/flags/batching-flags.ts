/** The batching flags of `proxy` and `serve`: how the surrogate's forward passes are shared and bounded. */
import type { Command } from 'commander';
import { integerFlag } from './flags.js';
import { BATCHING_DEFAULTS, type BatchingOptions } from '../../server/batching/options.js';

export interface BatchingFlags {
  batchWindowMs?: string;
  maxBatchRows?: string;
  maxQueueRows?: string;
  maxRows?: string;
}

export function addBatchingFlags(command: Command): Command {
  return command
    .option('--batch-window-ms <ms>', 'milliseconds a surrogate batch waits for concurrent requests to join it', String(BATCHING_DEFAULTS.windowMs))
    .option('--max-batch-rows <n>', 'rows per surrogate forward pass; larger requests are split and take turns', String(BATCHING_DEFAULTS.maxBatchRows))
    .option('--max-queue-rows <n>', 'rows waiting for the surrogate past which requests get 503 with Retry-After', String(BATCHING_DEFAULTS.maxQueueRows))
    .option(
      '--max-rows <n>',
      'rows per request for defenses that use the surrogate (413 past it, before forwarding)',
      String(BATCHING_DEFAULTS.maxRowsPerRequest),
    );
}

export function batchingFromFlags(flags: BatchingFlags, fail: (message: string) => never): BatchingOptions {
  // An absent flag (a config file or a caller that sets only some) takes the default.
  const read = (value: string | undefined, flag: string, min: number, fallback: number): number =>
    value === undefined ? fallback : integerFlag(value, flag, min, fail);
  return {
    windowMs: read(flags.batchWindowMs, '--batch-window-ms', 0, BATCHING_DEFAULTS.windowMs),
    maxBatchRows: read(flags.maxBatchRows, '--max-batch-rows', 1, BATCHING_DEFAULTS.maxBatchRows),
    maxQueueRows: read(flags.maxQueueRows, '--max-queue-rows', 1, BATCHING_DEFAULTS.maxQueueRows),
    maxRowsPerRequest: read(flags.maxRows, '--max-rows', 1, BATCHING_DEFAULTS.maxRowsPerRequest),
  };
}
