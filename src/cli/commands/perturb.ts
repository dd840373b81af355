/** `perturb`: apply a defense offline to logged model outputs (JSON in, JSON out). */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { DEFINITIONS, DefenseError, describeParam, parseDefense } from '../../defenses/index.js';
import { addSurrogateFlags, surrogateSourceFromFlags, type SurrogateFlags } from '../flags/surrogate-flags.js';
import { failCommand } from '../flags/flags.js';
import { perturbBatch, readPerturbInput } from './perturb-document.js';

async function readInput(file: string | undefined): Promise<string> {
  if (file && file !== '-') return readFile(file, 'utf8');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function listDefenses(): string {
  return DEFINITIONS.map((d) => {
    const aliases = Object.keys(d.aliases ?? {});
    const params = Object.entries(d.params).map(
      ([name, schema]) => `    ${name}: ${describeParam(schema)}${schema.default === undefined ? '' : `, default ${schema.default}`} — ${schema.description}`,
    );
    return [`${d.name}${aliases.length ? ` (also: ${aliases.join(', ')})` : ''} — ${d.summary}`, ...params].join('\n');
  }).join('\n');
}

interface PerturbOptions extends SurrogateFlags {
  defense?: string;
  input?: string;
  logits?: boolean;
  secret?: string;
  list?: boolean;
  inputs?: string;
  misinformation?: string;
}

/** Errors that describe the user's input or files (exit 2), as opposed to bugs (a stack trace). */
function isUserFacing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') return true;
  return ['ModelError', 'ModelFileError', 'ModelInputError', 'MissingProviderError', 'UnsupportedModelError', 'BackendError'].includes((error as Error).name);
}

const fail: (message: string) => never = (message) => failCommand('perturb', message);

export function registerPerturbCommand(program: Command): void {
  const command = program
    .command('perturb')
    .description(
      'apply a defense to probability rows: reads {"probs": [[...]], "surrogateProbs"?, "misinformationProbs"?, "inputKeys"?} and prints {"probs", "l1", "top1Changed"}',
    )
    .option('-d, --defense <spec>', 'defense spec, e.g. "mad:eps=0.5,oracle=argmax|rounding:decimals=2"')
    .option('-i, --input <file>', 'JSON input file (default: stdin)')
    .option('--logits', 'the rows are logits, not probabilities')
    .option('--secret <secret>', 'secret that keys deterministic noise (default: env MSD_NOISE_SECRET, else random per run)')
    .option(
      '--inputs <file>',
      'model inputs, one row per probability row (JSON array of rows): computes missing context with the models below, and keys the noise',
    )
    .option('--misinformation <dir>', 'saved misinformation model directory (for misinformation when the input has no "misinformationProbs")')
    .option('--list', 'list the defenses and their parameters');
  addSurrogateFlags(command).action(async (opts: PerturbOptions) => {
    if (opts.list) {
      process.stdout.write(`${listDefenses()}\n`);
      return;
    }
    if (!opts.defense) fail('--defense is required (see --list)');
    try {
      const defense = parseDefense(opts.defense, {
        inputFormat: opts.logits ? 'logits' : 'probs',
        noiseSecret: opts.secret ?? process.env.MSD_NOISE_SECRET,
      });
      const input = readPerturbInput(await readInput(opts.input));
      const surrogate = surrogateSourceFromFlags(opts, fail);
      if (surrogate || opts.misinformation || opts.inputs) {
        if (!opts.inputs) fail('--surrogate (-from, -onnx) and --misinformation need --inputs FILE (the model inputs, one row per probability row)');
        const { modelContext } = await import('./perturb-models.js');
        Object.assign(
          input.context,
          await modelContext(defense.needs, input.context, input.probs.rows, { inputsFile: opts.inputs, surrogate, misinformationDir: opts.misinformation }),
        );
      }
      process.stdout.write(`${JSON.stringify(perturbBatch(defense, input))}\n`);
    } catch (error) {
      if (error instanceof DefenseError || isUserFacing(error)) fail((error as Error).message);
      throw error;
    }
  });
}
