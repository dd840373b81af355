/**
 * Builds a Defense from a spec string ("mad:eps=0.5,oracle=argmax|rounding:decimals=2") or a JSON
 * config ({ "name": "mad", "eps": 0.5 } or { "name": "mad", "params": {...} }, arrays for pipelines).
 * Every mistake is reported at parse time with what is allowed.
 */
import type { DefenseOptions } from './definition.js';
import { DefenseSpecError } from './errors.js';
import { canonicalSpec, resolveParams } from './params.js';
import { composeDefense, type NamedStage } from './pipeline.js';
import { defenseNames, lookupDefense } from './registry.js';
import type { InputFormat } from './simplex.js';
import type { Defense } from './types.js';

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

function stageFromConfig(config: string | StageConfig): RawStage[] {
  if (typeof config === 'string') return config.split('|').map(parseStageString);
  if (!config || typeof config !== 'object' || typeof config.name !== 'string') {
    throw new DefenseSpecError(`a defense config needs a "name" string, got ${JSON.stringify(config)}`);
  }
  const { name, params, ...flat } = config;
  if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) {
    throw new DefenseSpecError(`${name}: "params" must be an object`);
  }
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

export function parseDefense(config: DefenseConfig, options: ParseOptions = {}): Defense {
  const inputFormat = options.inputFormat ?? 'probs';
  if (inputFormat !== 'probs' && inputFormat !== 'logits') {
    throw new DefenseSpecError(`inputFormat must be "probs" or "logits", got ${JSON.stringify(inputFormat)}`);
  }
  if (typeof config === 'string' && !config.trim()) throw new DefenseSpecError('the defense spec is empty; try "none" or "mad:eps=0.5"');
  const items = Array.isArray(config) ? config : [config as string | StageConfig];
  const raws = items.flatMap((item) => stageFromConfig(item));
  return composeDefense(
    raws.map((raw) => buildStage(raw, options)),
    inputFormat,
  );
}
