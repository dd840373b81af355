/**
 * A grid as it travels through Redis: its definition (the validated config, defenses by spec), an
 * id derived from that definition, and the names of the keys the queue uses. Two coordinators on
 * the same grid compute the same id, so they share one queue and its jobs (one per run key).
 *
 * Keys (prefix `msd:eval` by default; everything of a grid under `<prefix>:grid-<id>:`):
 *   <prefix>:grids                      sorted set of announced grid ids (score: first announcement)
 *   <prefix>:grid-<id>:*                BullMQ's queue (jobs by run key, their records and logs)
 *   <prefix>:grid-<id>:msd-grid         hash: definition, fingerprint, retries, visibility timeout
 *   <prefix>:grid-<id>:msd-workers      hash: worker name → its heartbeat (what it runs)
 */
import { createHash } from 'node:crypto';
import { validateConfig, type DefenseSetting, type EvalConfig } from '../config.js';
import { runKey, type RunSpec } from '../run/run-key.js';
import { stableJson } from '../stable-json.js';
import type { RunRef } from '../run/parallel.js';

export const DEFAULT_PREFIX = 'msd:eval';

/** The config without what cannot travel (ready defense objects) and without its name (the results folder's). */
export type GridDefinition = Omit<EvalConfig, 'name' | 'defenses'> & { defenses: Omit<DefenseSetting, 'defense'>[] };

export function gridDefinition(config: EvalConfig): GridDefinition {
  const { name: _name, defenses, ...rest } = config;
  return { ...rest, defenses: defenses.map(({ defense: _defense, ...setting }) => setting) };
}

/** 16 hex digits of the definition's hash: equal grids (whatever their name) share a queue. */
export function gridId(config: EvalConfig): string {
  return createHash('sha256')
    .update(stableJson(gridDefinition(config)))
    .digest('hex')
    .slice(0, 16);
}

/** Settings that cannot go through a queue: ready defense objects (programmatic use, the ablation's surrogate kinds). */
export function untransportable(config: EvalConfig): DefenseSetting[] {
  return config.defenses.filter((d) => d.defense !== undefined);
}

/**
 * A definition read back from Redis, checked as a config file would be: every field validated,
 * every defense rebuilt from its spec, and the id recomputed (a definition that does not hash to
 * its grid's id is refused).
 */
export function configFromDefinition(raw: unknown, expectedId: string): EvalConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('the grid definition is not an object');
  const { defenses, ...rest } = raw as Record<string, unknown>;
  if (!Array.isArray(defenses)) throw new Error('the grid definition has no defenses list');
  const settings = defenses as Partial<DefenseSetting>[];
  const config = validateConfig({ ...rest, name: `grid-${expectedId}`, defenses: settings.map((s) => s.spec) });
  // The coordinator's family and parameter names (a config file may name a family), once the spec checks out.
  config.defenses = config.defenses.map((setting, i) => ({
    ...setting,
    family: typeof settings[i].family === 'string' ? settings[i].family : setting.family,
    params: typeof settings[i].params === 'string' ? settings[i].params : setting.params,
  }));
  const id = gridId(config);
  if (id !== expectedId) throw new Error(`the grid definition hashes to ${id}, not to its grid id ${expectedId}`);
  return config;
}

export interface GridKeys {
  /** BullMQ's queue name and prefix. */
  queueName: string;
  prefix: string;
  grids: string;
  meta: string;
  workers: string;
}

export function gridKeys(id: string, prefix = DEFAULT_PREFIX): GridKeys {
  const queueName = `grid-${id}`;
  return { queueName, prefix, grids: `${prefix}:grids`, meta: `${prefix}:${queueName}:msd-grid`, workers: `${prefix}:${queueName}:msd-workers` };
}

/** What a job carries: the run by its setting's spec (the worker checks that it is a run of its grid). */
export interface RunJobData {
  grid: string;
  key: string;
  run: RunRef;
}

export function jobData(id: string, config: EvalConfig, run: RunSpec): RunJobData {
  return { grid: id, key: runKey(config, run), run: { spec: run.defense.spec, policy: run.policy, budget: run.budget, attackerSeed: run.attackerSeed } };
}

/** The job's run as a RunSpec of this grid, or an error saying why it is not one. */
export function runOfJob(config: EvalConfig, jobId: string | undefined, data: unknown): RunSpec {
  const d = data as Partial<RunJobData> | undefined;
  const ref = d?.run;
  if (!ref || typeof ref.spec !== 'string') throw new Error(`job ${jobId}: no run in its data`);
  const defense = config.defenses.find((s) => s.spec === ref.spec);
  if (!defense) throw new Error(`job ${jobId}: defense "${ref.spec}" is not in the grid`);
  if (!config.policies.includes(ref.policy) || !config.budgets.includes(ref.budget))
    throw new Error(`job ${jobId}: policy ${ref.policy} or budget ${ref.budget} is not in the grid`);
  if (!Number.isSafeInteger(ref.attackerSeed) || ref.attackerSeed < 0 || ref.attackerSeed >= config.seeds)
    throw new Error(`job ${jobId}: attacker seed ${ref.attackerSeed} is not in the grid`);
  const run: RunSpec = { defense, policy: ref.policy, budget: ref.budget, attackerSeed: ref.attackerSeed };
  const key = runKey(config, run);
  if (key !== jobId || key !== d.key) throw new Error(`job ${jobId}: its run's key is ${key}`);
  return run;
}

/** The grid's settings for its queue, as the coordinator stored them. */
export interface GridMeta {
  id: string;
  definition: GridDefinition;
  fingerprint: import('./fingerprint.js').Fingerprint;
  /** Times a run is retried after a failure or a dead worker. */
  retries: number;
  /** A run's lock: a worker that stops renewing it for this long is taken for dead. */
  visibilityMs: number;
  announcedAt: string;
}

export function encodeMeta(meta: GridMeta): Record<string, string> {
  return {
    id: meta.id,
    definition: JSON.stringify(meta.definition),
    fingerprint: JSON.stringify(meta.fingerprint),
    retries: String(meta.retries),
    visibilityMs: String(meta.visibilityMs),
    announcedAt: meta.announcedAt,
  };
}

export function decodeMeta(fields: Record<string, string>): GridMeta | undefined {
  if (!fields.id || !fields.definition || !fields.fingerprint) return undefined;
  return {
    id: fields.id,
    definition: JSON.parse(fields.definition) as GridDefinition,
    fingerprint: JSON.parse(fields.fingerprint),
    retries: Number(fields.retries) || 0,
    visibilityMs: Number(fields.visibilityMs) || 30_000,
    announcedAt: fields.announcedAt ?? '',
  };
}
