/** `perturb`: apply a defense offline to logged model outputs (JSON in, JSON out). */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { DEFINITIONS, DefenseError, describeParam, parseDefense } from '../defenses/index.js';
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
    const params = Object.entries(d.params).map(([name, schema]) => `    ${name}: ${describeParam(schema)}${schema.default === undefined ? '' : `, default ${schema.default}`} — ${schema.description}`);
    return [`${d.name}${aliases.length ? ` (also: ${aliases.join(', ')})` : ''} — ${d.summary}`, ...params].join('\n');
  }).join('\n');
}

function fail(message: string): never {
  process.stderr.write(`perturb: ${message.replace(/\s+/g, ' ')}\n`);
  process.exit(2);
}

export function registerPerturbCommand(program: Command): void {
  program
    .command('perturb')
    .description('apply a defense to probability rows: reads {"probs": [[...]], "surrogateProbs"?, "misinformationProbs"?, "inputKeys"?} and prints {"probs", "l1", "top1Changed"}')
    .option('-d, --defense <spec>', 'defense spec, e.g. "mad:eps=0.5,oracle=argmax|rounding:decimals=2"')
    .option('-i, --input <file>', 'JSON input file (default: stdin)')
    .option('--logits', 'the rows are logits, not probabilities')
    .option('--secret <secret>', 'secret that keys deterministic noise (default: env MSD_NOISE_SECRET, else random per run)')
    .option('--list', 'list the defenses and their parameters')
    .action(async (opts: { defense?: string; input?: string; logits?: boolean; secret?: string; list?: boolean }) => {
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
        process.stdout.write(`${JSON.stringify(perturbBatch(defense, input))}\n`);
      } catch (error) {
        if (error instanceof DefenseError || (error as NodeJS.ErrnoException).code === 'ENOENT') fail((error as Error).message);
        throw error;
      }
    });
}
