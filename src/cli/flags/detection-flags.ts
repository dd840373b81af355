/**
 * Detection flags of `msd proxy` and `msd serve`: `--client-id` turns client detection on (there is
 * no separate switch: without an identity there is no client to watch), `--detection` gives the
 * detector and policy options (JSON, or @file with JSON/YAML), and `--tier NAME=SPEC` the defense of
 * each escalation tier the policy names.
 *
 * Default ladder: the policy's default steps ["mad-argmax", "argmax"] when a surrogate is configured
 * (mad-argmax needs one); without a surrogate, ["reverse-sigmoid", "argmax"], which need none (the
 * start-up line says so). A policy step naming no tier, or a tier needing a surrogate that is not
 * configured, is refused at start-up with what to write instead.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { DefenseError, parseDefense } from '../../defenses/index.js';
import { createClientDetection, DetectionConfigError, type ClientDetection, type DetectionOptions } from '../../detection/index.js';
import { ServingOptionError } from '../../server/errors.js';
import { z } from 'zod';
import { fromText, optionStyle, parseOptions, positiveInteger } from '../../validation/index.js';
import { parseFlag } from './flags.js';

export interface DetectionFlags {
  detection?: string;
  tier?: string[];
}

/** Tier defenses used when a policy step names them and no --tier overrides them. */
export const BUILTIN_TIERS: Readonly<Record<string, string>> = {
  'mad-argmax': 'mad-argmax:eps=0.8',
  'reverse-sigmoid': 'reverse-sigmoid:beta=0.7,gamma=0.2',
  argmax: 'argmax',
};
export const SURROGATE_FREE_STEPS = ['reverse-sigmoid', 'argmax'] as const;

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function addDetectionFlags(command: Command): Command {
  return command
    .option(
      '--detection <json|@file>',
      'with --client-id: detector and policy options (DetectionOptions as JSON, or @file.json/.yaml), e.g. \'{"budget":{"maxQueries":5000}}\'',
    )
    .option(
      '--tier <name=spec>',
      'with --client-id: the defense of an escalation tier the policy names, e.g. "mad-argmax=mad-argmax:eps=0.8" (repeatable)',
      collect,
    );
}

export interface DetectionSetup {
  detection: ClientDetection;
  /** ServingOptions.tiers for the policy's steps. */
  tiers: Record<string, string>;
  /** The ladder, for the start-up line. */
  ladder: string[];
  /** Said at start-up (e.g. why the ladder is not the default). */
  notice?: string;
}

/** The --detection options (JSON, or @file with JSON/YAML); {} without the flag. */
export function readDetectionOptions(text: string | undefined): DetectionOptions {
  if (text === undefined) return {};
  let source = text;
  if (text.startsWith('@')) {
    try {
      source = readFileSync(text.slice(1), 'utf8');
    } catch (error) {
      throw new ServingOptionError(`--detection ${text}: cannot read the file (${(error as Error).message})`);
    }
  }
  let parsed: unknown;
  try {
    parsed = text.startsWith('@') && !/\.json$/i.test(text) ? parseYaml(source) : JSON.parse(source);
  } catch (error) {
    throw new ServingOptionError(`--detection must be JSON (or @file.json / @file.yaml), e.g. '{"prada":{"delta":0.95}}': ${(error as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new ServingOptionError('--detection must be an object of detection options, e.g. \'{"budget":{"maxQueries":5000}}\'');
  return parsed as DetectionOptions;
}

function readTiers(specs: readonly string[]): Record<string, string> {
  const tiers: Record<string, string> = {};
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    const name = eq > 0 ? spec.slice(0, eq).trim() : '';
    if (!name || eq === spec.length - 1) throw new ServingOptionError(`--tier must be NAME=SPEC, e.g. "mad-argmax=mad-argmax:eps=0.8", got "${spec}"`);
    tiers[name] = spec.slice(eq + 1).trim();
  }
  return tiers;
}

const isTierStep = (step: string): boolean => step !== 'refuse' && !step.startsWith('throttle');

/**
 * The detection and its tiers from the flags; undefined without --client-id (the flags then must not
 * be given). `surrogate`: whether a surrogate model is configured (MAD tiers need one).
 */
export function detectionFromFlags(flags: DetectionFlags & { clientId?: string }, surrogate: boolean, noiseSecret?: string): DetectionSetup | undefined {
  if (!flags.clientId) {
    if (flags.detection !== undefined || flags.tier?.length)
      throw new ServingOptionError('--detection and --tier need --client-id (client detection is on with it), e.g. --client-id header:x-api-key');
    return undefined;
  }
  const options = readDetectionOptions(flags.detection);
  const given = readTiers(flags.tier ?? []);
  let notice: string | undefined;
  const rawSteps = options.policy?.steps;
  if (rawSteps === undefined && !surrogate && !('mad-argmax' in given)) {
    options.policy = { ...options.policy, steps: [...SURROGATE_FREE_STEPS] };
    notice = 'no --surrogate, so the escalation ladder is reverse-sigmoid → argmax (the default mad-argmax tier needs a surrogate)';
  }
  let detection: ClientDetection;
  try {
    detection = createClientDetection(options);
  } catch (error) {
    if (error instanceof DetectionConfigError) throw new ServingOptionError(`--detection: ${error.message}`);
    throw error;
  }
  const steps = (options.policy?.steps ?? ['mad-argmax', 'argmax']) as readonly string[];
  const tiers: Record<string, string> = { ...given };
  for (const step of steps.filter(isTierStep)) {
    if (tiers[step] !== undefined) continue;
    const builtin = BUILTIN_TIERS[step];
    if (builtin === undefined)
      throw new ServingOptionError(`detection policy step "${step}" names no tier: add --tier ${step}=SPEC (e.g. --tier ${step}=argmax)`);
    tiers[step] = builtin;
  }
  for (const [name, spec] of Object.entries(tiers)) {
    let needs: readonly string[];
    try {
      needs = parseDefense(spec, { noiseSecret }).needs;
    } catch (error) {
      if (error instanceof DefenseError) throw new ServingOptionError(`--tier ${name}: ${error.message}`);
      throw error;
    }
    if ((needs.includes('surrogate') || needs.includes('surrogateGram')) && !surrogate) {
      throw new ServingOptionError(
        `tier "${name}" (${spec}) needs a surrogate model: pass --surrogate PATH, or choose a ladder without MAD, e.g. --detection '{"policy":{"steps":["reverse-sigmoid","argmax"]}}'`,
      );
    }
    if (needs.includes('misinformation'))
      throw new ServingOptionError(`tier "${name}" (${spec}) needs a misinformation model, which the command line does not load`);
  }
  return { detection, tiers, ladder: [...steps], notice };
}

/** The tiers' needs (for loading the defense context). */
export function tierNeeds(tiers: Readonly<Record<string, string>>, noiseSecret?: string): string[] {
  return Object.values(tiers).flatMap((spec) => [...parseDefense(spec, { noiseSecret }).needs]);
}

/** `msd eval --detection --thieves ...`: thieves with many identities against detection above the client. */
export interface ThiefFlags {
  thieves?: string;
  thiefQueries?: string;
  thiefSpanMinutes?: string;
  populationOptions?: string;
  fingerprintOptions?: string;
}

export function addThiefFlags(command: Command): Command {
  return command
    .option(
      '--thieves <specs>',
      'with --detection: thieves with many identities instead of the per-client attackers: "target" (the issue\'s), "all", or ATTACK:IDENTITIES[:cohort][:dilute=R][:slow][:perclient],... e.g. "random:200,random:200:cohort"',
    )
    .option('--thief-queries <n>', "with --thieves: the thief's own queries (cover rows come on top)", '10000')
    .option('--thief-span-minutes <n>', 'with --thieves: simulated minutes the thief spreads its queries over (a slow thief takes longer)', '60')
    .option('--population-options <json>', 'with --thieves: population options over the calibrated ones, e.g. \'{"youngQueries":100,"minQueries":200}\'')
    .option('--fingerprint-options <json|false>', 'with --thieves: fingerprint options, or false to run without fingerprints', '{}');
}

export interface ThiefSettings {
  scenarios: import('../../eval/detection/sybil.js').ThiefScenario[];
  thiefQueries: number;
  spanMs: number;
  population?: import('../../server/clients/options.js').PopulationServingOptions;
  fingerprints: import('../../server/clients/options.js').FingerprintServingOptions | false;
}

/** The --thieves settings; undefined without --thieves. Throws ServingOptionError saying what to write. */
export async function thiefSettingsFromFlags(flags: ThiefFlags): Promise<ThiefSettings | undefined> {
  if (flags.thieves === undefined) return undefined;
  const { parseScenarios, ScenarioError } = await import('../../eval/detection/sybil.js');
  let scenarios: ThiefSettings['scenarios'];
  try {
    scenarios = parseScenarios(flags.thieves);
  } catch (error) {
    if (error instanceof ScenarioError) throw new ServingOptionError(`--thieves: ${error.message}`);
    throw error;
  }
  const positive = (value: string | undefined, flag: string): number => parseOptions(fromText(positiveInteger()), value, optionStyle(ServingOptionError, flag));
  const json = (text: string | undefined, flag: string): Record<string, unknown> | undefined => {
    if (text === undefined) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new ServingOptionError(`${flag} must be JSON, e.g. '{}': ${(error as Error).message}`);
    }
    if (parsed === false) return undefined;
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ServingOptionError(`${flag} must be an object of options, e.g. '{}'`);
    return parsed as Record<string, unknown>;
  };
  const fingerprints =
    flags.fingerprintOptions === 'false'
      ? false
      : ((json(flags.fingerprintOptions ?? '{}', '--fingerprint-options') ?? false) as ThiefSettings['fingerprints']);
  return {
    scenarios,
    thiefQueries: positive(flags.thiefQueries ?? '10000', '--thief-queries'),
    spanMs: positive(flags.thiefSpanMinutes ?? '60', '--thief-span-minutes') * 60_000,
    population: json(flags.populationOptions, '--population-options') as ThiefSettings['population'],
    fingerprints,
  };
}

/** --benign-queries: "MIN-MAX" queries per benign client, 1 ≤ MIN ≤ MAX. */
const QUERY_RANGE = z
  .string()
  .transform((text) => /^(\d+)-(\d+)$/.exec(text))
  .refine((match) => match !== null && Number(match[1]) >= 1 && Number(match[2]) >= Number(match[1]), { error: 'MIN-MAX with 1 ≤ MIN ≤ MAX, e.g. 20-100' })
  .transform((match) => ({ min: Number(match![1]), max: Number(match![2]) }));

/**
 * Runs `msd eval --detection --thieves ...` (called by the eval command): parses the flags, runs the
 * scenarios, prints one line per target and where the report went.
 */
export async function runThievesCommand(
  flags: ThiefFlags & { benignClients?: string; benignQueries?: string; detectionOptions?: string; quiet?: boolean },
  context: {
    config: import('../../eval/config.js').EvalConfig;
    outDir: string;
    cacheDir: string;
    log: (line: string) => void;
    fail: (message: string) => never;
  },
): Promise<void> {
  const { fail } = context;
  let settings: ThiefSettings;
  try {
    settings = (await thiefSettingsFromFlags(flags))!;
  } catch (error) {
    if (error instanceof ServingOptionError) fail(error.message);
    throw error;
  }
  const clients = parseFlag(fromText(positiveInteger()), flags.benignClients ?? '100', '--benign-clients', fail);
  const range = parseFlag(QUERY_RANGE, flags.benignQueries ?? '20-100', '--benign-queries', fail);
  let detection: DetectionOptions | undefined;
  try {
    detection = flags.detectionOptions === undefined ? undefined : (JSON.parse(flags.detectionOptions) as DetectionOptions);
  } catch (error) {
    fail(`--detection-options must be JSON, e.g. '{"ood":{"maxRate":0.2}}': ${(error as Error).message}`);
  }
  const { evaluateThieves } = await import('../../eval/detection/evaluate-thieves.js');
  const { createProgress } = await import('../progress.js');
  const started = Date.now();
  const { report, files } = await evaluateThieves({
    config: context.config,
    outDir: context.outDir,
    cacheDir: context.cacheDir,
    scenarios: settings.scenarios,
    thiefQueries: settings.thiefQueries,
    spanMs: settings.spanMs,
    population: settings.population,
    fingerprints: settings.fingerprints,
    benign: { clients, minQueries: range.min, maxQueries: range.max },
    detection,
    log: context.log,
    progress: (label, total) => createProgress({ label, total, silent: flags.quiet }),
  }).catch((error: unknown) => {
    if (error instanceof DetectionConfigError || error instanceof ServingOptionError)
      fail(`--population-options / --fingerprint-options / --detection-options: ${error.message}`);
    throw error;
  });
  for (const t of report.thieves) {
    if (t.attacker === 'none') {
      const alarms = t.benign.alarmStarts.all + t.benign.alarmStarts.young;
      process.stdout.write(
        `benign only: ${alarms} population alarms; answers changed ${t.benign.changed}/${t.benign.answers}, top-1 ${t.benign.top1Changed}; refused clients ${t.benign.refusedClients}\n`,
      );
      continue;
    }
    process.stdout.write(
      `${t.scenario}: ${t.answers.clean} clean, ${t.answers.defended} defended, ${t.answers.refused} refused of ${t.attackQueries}; ${t.knockoffAccuracy ? `knockoff ${(t.knockoffAccuracy.undefended * 100).toFixed(1)}% → ${(t.knockoffAccuracy.withDetection * 100).toFixed(1)}%; ` : ''}benign top-1 changed ${t.benign.top1Changed}/${t.benign.answers}, refused ${t.benign.refusedClients}${t.target ? `; target (${t.target.what}) ${t.target.met ? 'met' : 'missed'}` : ''}\n`,
    );
  }
  process.stdout.write(
    `thieves: ${files.json} in ${((Date.now() - started) / 1000).toFixed(0)} s; targets ${report.targets.met ? 'met' : 'not met'}${files.insertedInto ? `; section added to ${files.insertedInto}` : ''}\n`,
  );
}
