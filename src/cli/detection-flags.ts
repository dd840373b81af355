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
import { DefenseError, parseDefense } from '../defenses/index.js';
import { createClientDetection, DetectionConfigError, type ClientDetection, type DetectionOptions } from '../detection/index.js';
import { ServingOptionError } from '../server/errors.js';

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
    .option('--detection <json|@file>', 'with --client-id: detector and policy options (DetectionOptions as JSON, or @file.json/.yaml), e.g. \'{"budget":{"maxQueries":5000}}\'')
    .option('--tier <name=spec>', 'with --client-id: the defense of an escalation tier the policy names, e.g. "mad-argmax=mad-argmax:eps=0.8" (repeatable)', collect);
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
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ServingOptionError('--detection must be an object of detection options, e.g. \'{"budget":{"maxQueries":5000}}\'');
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
    if (flags.detection !== undefined || flags.tier?.length) throw new ServingOptionError('--detection and --tier need --client-id (client detection is on with it), e.g. --client-id header:x-api-key');
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
    if (builtin === undefined) throw new ServingOptionError(`detection policy step "${step}" names no tier: add --tier ${step}=SPEC (e.g. --tier ${step}=argmax)`);
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
      throw new ServingOptionError(`tier "${name}" (${spec}) needs a surrogate model: pass --surrogate PATH, or choose a ladder without MAD, e.g. --detection '{"policy":{"steps":["reverse-sigmoid","argmax"]}}'`);
    }
    if (needs.includes('misinformation')) throw new ServingOptionError(`tier "${name}" (${spec}) needs a misinformation model, which the command line does not load`);
  }
  return { detection, tiers, ladder: [...steps], notice };
}

/** The tiers' needs (for loading the defense context). */
export function tierNeeds(tiers: Readonly<Record<string, string>>, noiseSecret?: string): string[] {
  return Object.values(tiers).flatMap((spec) => [...parseDefense(spec, { noiseSecret }).needs]);
}
