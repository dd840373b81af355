#!/usr/bin/env node
/**
 * The command-line entry point. Each command lives in its own file and registers itself here;
 * commands stay thin and call the library. Only the command being run is loaded, so commands that
 * need no TensorFlow.js (perturb) start without it.
 */
import { Command } from 'commander';

type Register = (program: Command) => void;

const COMMANDS: Record<string, () => Promise<Register>> = {
  perturb: async () => (await import('./commands/perturb.js')).registerPerturbCommand,
  serve: async () => (await import('./commands/serve.js')).registerServeCommand,
  proxy: async () => (await import('./commands/proxy.js')).registerProxyCommand,
  train: async () => (await import('./commands/train.js')).registerTrainCommand,
  info: async () => (await import('./commands/info.js')).registerInfoCommand,
  eval: async () => (await import('./commands/eval.js')).registerEvalCommand,
  'eval-worker': async () => (await import('./commands/eval-worker.js')).registerEvalWorkerCommand,
};

const program = new Command();
program.name('msd').description('Defend a served model against model stealing: perturb, serve, proxy, train, info, eval, eval-worker.').showHelpAfterError();

const requested = process.argv[2];
const names = requested && requested in COMMANDS ? [requested] : Object.keys(COMMANDS);
for (const name of names) (await COMMANDS[name]())(program);

await program.parseAsync(process.argv);
