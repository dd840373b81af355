/**
 * Builds a Defense from a spec string ("mad:eps=0.5,oracle=argmax|rounding:decimals=2") or a JSON
 * config ({ "name": "mad", "eps": 0.5 } or { "name": "mad", "params": {...} }, arrays for pipelines).
 * Every mistake is reported at parse time with what is allowed.
 */
import { z } from 'zod';
import { oneOf, optionStyle, parseOptions, SENTENCE, shown } from '../../validation/index.js';
import type { DefenseOptions } from './definition.js';
import { DefenseSpecError } from '../errors.js';
import { canonicalSpec, resolveParams } from './params.js';
import { composeDefense, type NamedStage } from './pipeline.js';
import { defenseNames, lookupDefense } from './registry.js';
import type { InputFormat } from '../math/simplex.js';
import type { Defense } from '../types.js';

export interface StageConfig {
  name: string;
  params?: Record<string, unknown>;
  [param: string]: unknown;
}
export type DefenseConfig = string | StageConfig | readonly (string | StageConfig)[];

export interface ParseOptions extends DefenseOptions {
  /** What the model answers: probabilities (default) or logits (softmaxed before the defense). */
  inputFormat?: InputFormat;
}

interface RawStage {
  name: string;
  params: Record<string, unknown>;
}

function parseStageString(text: string): RawStage {
  const trimmed = text.trim();
  if (!trimmed) throw new DefenseSpecError('empty stage in defense spec (two "|" in a row, or a trailing "|")');
  const colon = trimmed.indexOf(':');
  const name = (colon < 0 ? trimmed : trimmed.slice(0, colon)).trim();
  const params: Record<string, unknown> = {};
  if (colon >= 0) {
    const body = trimmed.slice(colon + 1).trim();
    for (const part of body ? body.split(',') : []) {
      const eq = part.indexOf('=');
      if (eq < 0) throw new DefenseSpecError(`${name}: expected "param=value", got "${part.trim()}"`);
      const key = part.slice(0, eq).trim();
      if (key in params) throw new DefenseSpecError(`${name}: parameter "${key}" given twice`);
      params[key] = part.slice(eq + 1).trim();
    }
  }
  return { name, params };
}

const stageConfigSchema = z.looseObject(
  {
    name: z.custom<string>((name) => typeof name === 'string', {
      error: (issue) => `needs a "name" string, e.g. { "name": "mad", "eps": 0.5 }${issue.input === undefined ? '' : `, got ${shown(issue.input)}`}`,
      params: SENTENCE,
      abort: true,
    }),
    params: z.record(z.string(), z.unknown(), { error: 'an object of parameters, e.g. { "eps": 0.5 }' }).optional(),
  } satisfies Record<'name' | 'params', z.ZodType>,
  { error: 'a spec string or an object with a "name", e.g. { "name": "mad", "eps": 0.5 }' },
);

/** Messages read `a defense config needs a "name" ...` and `mad: "params" must be an object ...`. */
const stageConfigStyle = (config: unknown) =>
  optionStyle(DefenseSpecError, '', {
    name: (path) => (path[0] === 'params' ? `${(config as StageConfig).name}: "params"` : 'a defense config'),
  });

function stageFromConfig(config: string | StageConfig): RawStage[] {
  if (typeof config === 'string') return config.split('|').map(parseStageString);
  parseOptions(stageConfigSchema, config, stageConfigStyle(config));
  const { name, params, ...flat } = config;
  return [{ name, params: { ...flat, ...(params ?? {}) } }];
}

function buildStage(raw: RawStage, options: ParseOptions): NamedStage {
  const resolved = lookupDefense(raw.name);
  if (!resolved) throw new DefenseSpecError(`unknown defense "${raw.name}"; allowed: ${defenseNames().join(', ')}`);
  const { definition, preset } = resolved;
  for (const key of Object.keys(preset)) {
    if (raw.params[key] !== undefined && String(raw.params[key]) !== String(preset[key])) {
      throw new DefenseSpecError(`${raw.name} sets ${key}=${preset[key]}; use "${definition.name}" to choose ${key} yourself`);
    }
  }
  const params = resolveParams(definition.name, definition.params, { ...raw.params, ...preset });
  definition.check?.(params);
  return { name: definition.name, spec: canonicalSpec(definition.name, definition.params, params), stage: definition.create(params, options) };
}

const parseOptionsSchema = z.strictObject({
  inputFormat: oneOf(['probs', 'logits'], '"probs" or "logits"').optional(),
  noiseSecret: z.union([z.string(), z.instanceof(Buffer)], { error: 'a string or a Buffer (the key of the noise hash)' }).optional(),
} satisfies Record<keyof ParseOptions, z.ZodType>);

export function parseDefense(config: DefenseConfig, options: ParseOptions = {}): Defense {
  parseOptions(parseOptionsSchema, options, { error: DefenseSpecError });
  const inputFormat = options.inputFormat ?? 'probs';
  if (typeof config === 'string' && !config.trim()) throw new DefenseSpecError('the defense spec is empty; try "none" or "mad:eps=0.5"');
  const items = Array.isArray(config) ? config : [config as string | StageConfig];
  const raws = items.flatMap((item) => stageFromConfig(item));
  return composeDefense(
    raws.map((raw) => buildStage(raw, options)),
    inputFormat,
  );
}
