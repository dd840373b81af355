#!/usr/bin/env node
/**
 * The command-line entry point. Each command lives in its own file and registers itself here;
 * commands stay thin and call the library.
 */
import { Command } from 'commander';
import { registerPerturbCommand } from './perturb.js';
import { registerTrainCommand } from './train.js';
import { registerInfoCommand } from './info.js';

const program = new Command();
program
  .name('msd')
  .description('Defend a served model against model stealing: perturb, serve, proxy, train, eval.')
  .showHelpAfterError();

registerPerturbCommand(program);
registerTrainCommand(program);
registerInfoCommand(program);

await program.parseAsync(process.argv);
