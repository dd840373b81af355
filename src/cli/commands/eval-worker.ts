/**
 * `eval-worker`: runs the runs of grids that `msd eval --queue URL` put on a Redis queue, on this
 * machine, in N child processes (as `msd eval --jobs N` would), and returns each record to the
 * queue. Start it on as many machines as you like; stop it with Ctrl-C (the runs in progress finish
 * and are returned; a second Ctrl-C stops at once and those runs go back to the queue). With
 * --run-timeout, a run still going past it has its child killed and fails.
 */
import { cpus } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { defaultCacheRoot } from '../../eval/world/datasets.js';
import { failCommand, integerFlag } from '../flags/flags.js';
import { createProgress } from '../progress.js';
import { checkQueue, QUEUE_ENV, queueUrl, runTimeoutFlag } from '../flags/queue-flags.js';

interface EvalWorkerFlags {
  queue?: string;
  jobs?: string;
  cacheDir?: string;
  name?: string;
  grid?: string;
  idleExit?: string;
  runTimeout?: string;
  queuePrefix?: string;
  quiet?: boolean;
}

const fail: (message: string) => never = (message) => failCommand('eval-worker', message);

export function registerEvalWorkerCommand(program: Command): void {
  program
    .command('eval-worker')
    .description('run the runs that `msd eval --queue URL` put on a Redis queue, here, in N processes (any number of machines)')
    .option('--queue <url>', `the coordinator's Redis: redis://[user][:password]@host[:port][/db], rediss://… for TLS (default: $${QUEUE_ENV})`)
    .option('-j, --jobs <n>', `runs at once, one process each (default: the core count, ${cpus().length} here)`)
    .option('--cache-dir <dir>', "where trained victims are kept (default .cache/eval-models); the victim must hash as the coordinator's")
    .option('--name <name>', "this worker's name in the coordinator's progress and on each run (default host:pid)")
    .option('--grid <id>', 'serve only this grid (default: every grid announced on the queue, oldest first)')
    .option('--idle-exit <seconds>', 'exit once no grid has had a run to take for this long (default: wait for the next grid)')
    .option(
      '--run-timeout <duration>',
      'kill the child of a run still going after this long (90m, 2h, 30s; a bare number is minutes); the run fails and may be retried (default: no limit)',
    )
    .option('--queue-prefix <prefix>', 'key prefix on Redis', 'msd:eval')
    .option('-q, --quiet', 'no progress bars')
    .action(async (flags: EvalWorkerFlags) => {
      const url = queueUrl(flags.queue ?? true, fail, true)!;
      const jobs = flags.jobs === undefined ? cpus().length : integerFlag(flags.jobs, '--jobs', 1, fail);
      if (flags.grid !== undefined && !/^[0-9a-f]{16}$/.test(flags.grid))
        fail(`--grid must be a grid id (16 hex digits, as the coordinator prints it), got "${flags.grid}"`);
      const idleExit = flags.idleExit === undefined ? undefined : Number(flags.idleExit);
      if (idleExit !== undefined && !(Number.isFinite(idleExit) && idleExit >= 0)) fail(`--idle-exit must be a number of seconds ≥ 0, got "${flags.idleExit}"`);
      const runTimeoutMs = runTimeoutFlag(flags.runTimeout, fail);
      const log = (line: string) => process.stderr.write(`${line}\n`);
      const stop = new AbortController();
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals += 1;
        if (signals === 1) {
          log(`eval-worker: ${signal}: finishing the runs in progress, then exiting (again to stop now; their runs go back to the queue)`);
          stop.abort();
        } else process.exit(signal === 'SIGINT' ? 130 : 143);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      await checkQueue(url, fail);
      const { runEvalWorker } = await import('../../eval/queue/worker/queue-worker.js');
      const { QueueConnectionError } = await import('../../eval/queue/connect.js');
      const summary = await runEvalWorker({
        url,
        prefix: flags.queuePrefix,
        jobs,
        cacheDir: flags.cacheDir ?? join(defaultCacheRoot(), 'eval-models'),
        name: flags.name,
        grid: flags.grid,
        idleExitMs: idleExit === undefined ? undefined : idleExit * 1000,
        runTimeoutMs,
        log,
        progress: (label, total) => createProgress({ label, total, silent: flags.quiet }),
        signal: stop.signal,
      }).catch((error: unknown) => {
        if (error instanceof QueueConnectionError) fail(error.message);
        throw error;
      });
      const listed = (grids: { grid: string; reason: string }[]) => grids.map((r) => `grid ${r.grid} (${r.reason})`).join(', ');
      process.stdout.write(
        `eval-worker: ${summary.finished} run${summary.finished === 1 ? '' : 's'} returned${summary.refused.length ? `; refused ${listed(summary.refused)}` : ''}${summary.failed.length ? `; could not serve ${listed(summary.failed)}` : ''}\n`,
      );
      // A worker told to serve one grid that it refused or could not serve says so in its exit code.
      if (flags.grid && (summary.refused.length || summary.failed.length)) process.exitCode = 3;
      process.exit();
    });
}
