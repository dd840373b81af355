/**
 * The queue's flags: `msd eval --queue URL` (the coordinator) and `msd eval-worker --queue URL`.
 * The address may also come from MSD_QUEUE_URL, which keeps a password out of the process list.
 */
import type { Command } from 'commander';
import { z } from 'zod';
import type { EvalConfig } from '../../eval/config.js';
import { untransportable } from '../../eval/queue/grid.js';
import { QueueUrlError, parseQueueUrl } from '../../eval/queue/redis-url.js';
import type { FailedRun, QueueOptions } from '../../eval/queue/coordinator.js';
import { fromText, numberIn } from '../../validation/index.js';
import { integerFlag, parseFlag } from './flags.js';

export const QUEUE_ENV = 'MSD_QUEUE_URL';

export interface QueueFlags {
  queue?: string | boolean;
  queuePrefix?: string;
  retries?: string;
  visibilityTimeout?: string;
  metricsPort?: string;
  metricsHost?: string;
}

const URL_HELP = `redis://[user][:password]@host[:port][/db], rediss://… for TLS; without a value: $${QUEUE_ENV}`;

/** The address given with --queue (or, for a bare --queue, $MSD_QUEUE_URL), checked; undefined without --queue. */
export function queueUrl(flag: string | boolean | undefined, fail: (message: string) => never, required = false): string | undefined {
  if (flag === undefined && !required) return undefined;
  const url = typeof flag === 'string' ? flag : process.env[QUEUE_ENV];
  if (!url) fail(`--queue needs the Redis address (${URL_HELP})`);
  try {
    parseQueueUrl(url);
  } catch (error) {
    if (error instanceof QueueUrlError) fail(`--queue: ${error.message}`);
    throw error;
  }
  return url;
}

export function addQueueOptions(command: Command): Command {
  return command
    .option('--queue [url]', `run the pending runs on the workers of a Redis queue (msd eval-worker on any machine): ${URL_HELP}`)
    .option('--retries <n>', 'with --queue: tries after the first for a run that fails or whose worker dies', '2')
    .option('--visibility-timeout <seconds>', 'with --queue: a worker silent this long is taken for dead and its run goes back to the queue', '30')
    .option('--metrics-port <port>', 'with --queue: serve /metrics (runs by state, ETA, workers) on this port')
    .option('--metrics-host <host>', 'with --queue: address of the /metrics server', '127.0.0.1')
    .option('--queue-prefix <prefix>', 'with --queue: key prefix on Redis', 'msd:eval');
}

const DURATION_UNITS_MS = { s: 1000, m: 60_000, h: 3_600_000 } as const;
/** Node's timers hold at most 2^31−1 ms; a week is well within it and beyond any run. */
const MAX_RUN_TIMEOUT_MS = 7 * 24 * 3_600_000;

/** --run-timeout: a duration such as 90m, 2h or 30s (a bare number is minutes), more than 0 and at most a week. */
const RUN_TIMEOUT = z
  .string()
  .transform((text) => /^(\d+(?:\.\d+)?)\s*([smh]?)$/.exec(text.trim()))
  .transform((match) => (match ? Number(match[1]) * DURATION_UNITS_MS[(match[2] || 'm') as keyof typeof DURATION_UNITS_MS] : Number.NaN))
  .refine((ms) => ms >= 1 && ms <= MAX_RUN_TIMEOUT_MS, { error: 'a duration such as 90m, 2h or 30s (a bare number is minutes), above 0 and at most 168h' })
  .transform((ms) => Math.round(ms));

/** The worker's time limit per run in ms, or undefined without --run-timeout (no limit). */
export function runTimeoutFlag(value: string | undefined, fail: (message: string) => never): number | undefined {
  return value === undefined ? undefined : parseFlag(RUN_TIMEOUT, value, '--run-timeout', fail);
}

/** Fails the command with one line when the queue cannot be reached (before any victim is trained). */
export async function checkQueue(url: string, fail: (message: string) => never): Promise<void> {
  const { probeRedis, QueueConnectionError } = await import('../../eval/queue/connect.js');
  await probeRedis(url).catch((error: unknown) => {
    if (error instanceof QueueConnectionError) fail(error.message);
    throw error;
  });
}

/** The coordinator's queue options, or undefined without --queue; the queue is reached once to check the address. */
export async function queueOptionsFromFlags(
  flags: QueueFlags & { detection?: boolean; target?: string },
  fail: (message: string) => never,
): Promise<QueueOptions | undefined> {
  const url = queueUrl(flags.queue, fail);
  if (url === undefined) return undefined;
  if (flags.detection) fail('--queue runs a grid; --detection runs here only');
  if (flags.target !== undefined) fail('--queue runs a grid; --target runs here only');
  const visibility = parseFlag(fromText(numberIn({ min: 1 }, 'a number of seconds ≥ 1')), flags.visibilityTimeout ?? '30', '--visibility-timeout', fail);
  const metricsPort =
    flags.metricsPort === undefined
      ? undefined
      : parseFlag(fromText(numberIn({ integer: true, min: 0, max: 65535 }, 'a port from 0 to 65535')), flags.metricsPort, '--metrics-port', fail);
  // Checked now, not after the victim is prepared and the runs are queued.
  if (metricsPort) await checkPortFree(flags.metricsHost ?? '127.0.0.1', metricsPort, fail);
  await checkQueue(url, fail);
  return {
    url,
    prefix: flags.queuePrefix,
    retries: integerFlag(flags.retries ?? '2', '--retries', 0, fail),
    visibilityTimeoutMs: Math.round(visibility * 1000),
    metricsPort,
    metricsHost: flags.metricsHost,
  };
}

/** Fails, saying why, when /metrics could not listen on host:port. */
async function checkPortFree(host: string, port: number, fail: (message: string) => never): Promise<void> {
  const { createServer } = await import('node:net');
  const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const server = createServer();
    server.once('error', resolve);
    server.listen(port, host, () => server.close(() => resolve(undefined)));
  });
  if (error) {
    const why = error.code === 'EADDRINUSE' ? 'the port is in use' : error.code === 'EACCES' ? 'not allowed to listen there' : error.message;
    fail(`--metrics-port ${port}: cannot serve /metrics on ${host} (${why}); nothing was started`);
  }
}

/** A grid whose settings cannot travel (ready defense objects, the ablation's MAD surrogate kinds) runs locally only. */
export function checkGridForQueue(config: EvalConfig, fail: (message: string) => never): void {
  const custom = untransportable(config);
  if (custom.length)
    fail(
      `--queue: ${custom.length} defense setting${custom.length === 1 ? '' : 's'} of this grid cannot travel to other machines (MAD surrogate kinds such as "${custom[0].spec}"); run this grid without --queue`,
    );
}

/** Prints the runs that failed on every try (their logs went to stderr as they failed) and sets the exit code. */
export function reportFailedRuns(failed: readonly FailedRun[] | undefined): void {
  if (!failed?.length) return;
  process.stdout.write(`${failed.length} run${failed.length === 1 ? '' : 's'} failed on every try (logs above; rerun the command to try again):\n`);
  for (const run of failed) process.stdout.write(`  ${run.label} (${run.key}): ${run.reason}\n`);
  process.exitCode = 1;
}
