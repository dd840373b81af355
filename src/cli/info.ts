/** `info`: which TensorFlow.js backend this machine runs, its versions and threads, and why faster ones are unavailable. */
import type { Command } from 'commander';
import { ModelError, formatBackendInfo, initBackend } from '../models/index.js';

export function registerInfoCommand(program: Command): void {
  program
    .command('info')
    .description('print the TensorFlow.js backend in use (MSD_BACKEND forces one), versions, threads and why other backends are unavailable')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      try {
        const info = await initBackend({ log: () => {} });
        process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : `${formatBackendInfo(info)}\n`);
      } catch (error) {
        if (!(error instanceof ModelError)) throw error;
        process.stderr.write(`info: ${error.message}\n`);
        process.exit(2);
      }
    });
}
