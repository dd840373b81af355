/**
 * `eval`: every defense of a grid against a Knockoff attacker, through the real middleware on
 * loopback, written up as a trade-off report (results.json, results.csv, SVG plots, report.html).
 * Resumable: rerunning the same command skips the runs already in the results folder.
 */
import { writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import { failCommand } from '../flags/flags.js';
import {
  EvalConfigError,
  loadConfigFile,
  presetConfig,
  PRESET_NAMES,
  VICTIM_DATASETS,
  WORLDS,
  withWorld,
  type EvalConfig,
  type PresetName,
} from '../../eval/config.js';
import { defaultCacheRoot } from '../../eval/world/datasets.js';
import { evaluate } from '../../eval/grid/evaluate.js';
import { summaryText } from '../../eval/report/summary.js';
import { addExternalEvalOptions, runExternalEval, type ExternalEvalFlags } from './eval-external.js';
import { createProgress } from '../progress.js';
import { addThiefFlags, runThievesCommand, type ThiefFlags } from '../flags/detection-flags.js';
import { addQueueOptions, checkGridForQueue, queueOptionsFromFlags, reportFailedRuns, type QueueFlags } from '../flags/queue-flags.js';

interface EvalFlags extends ExternalEvalFlags, QueueFlags, ThiefFlags {
  preset?: string;
  config?: string;
  victim?: string;
  world?: string;
  out?: string;
  seed?: string;
  cacheDir?: string;
  quiet?: boolean;
  detection?: boolean;
  attackerQueries?: string;
  benignClients?: string;
  detectionOptions?: string;
  benignQueries?: string;
  seeds?: string;
  jobs?: string;
  reportOnly?: boolean;
}

const fail: (message: string) => never = (message) => failCommand('eval', message);

async function resolveConfig(flags: EvalFlags): Promise<EvalConfig> {
  if (flags.preset && flags.config) fail('give --preset or --config, not both (a config file may start from a preset with "preset": "quick")');
  let config: EvalConfig;
  if (flags.config) config = await loadConfigFile(flags.config);
  else {
    const preset = (flags.preset ?? 'quick') as PresetName;
    if (!PRESET_NAMES.includes(preset)) fail(`--preset must be one of ${PRESET_NAMES.join(', ')}, got "${flags.preset}"`);
    config = presetConfig(preset);
  }
  if (flags.victim !== undefined) {
    if (!VICTIM_DATASETS.includes(flags.victim as EvalConfig['victim'])) fail(`--victim must be one of ${VICTIM_DATASETS.join(', ')}, got "${flags.victim}"`);
    config = { ...config, victim: flags.victim as EvalConfig['victim'] };
  }
  if (flags.seed !== undefined) {
    const seed = Number(flags.seed);
    if (!Number.isSafeInteger(seed)) fail(`--seed must be an integer, got "${flags.seed}"`);
    config = { ...config, seed };
  }
  if (flags.seeds !== undefined) {
    const seeds = Number(flags.seeds);
    if (!Number.isSafeInteger(seeds) || seeds < 1) fail(`--seeds must be an integer ≥ 1 (attacker seeds per setting), got "${flags.seeds}"`);
    config = { ...config, seeds };
  }
  if (flags.world !== undefined) {
    if (!WORLDS.includes(flags.world as EvalConfig['world'])) fail(`--world must be one of ${WORLDS.join(', ')}, got "${flags.world}"`);
    config = withWorld(config, flags.world as EvalConfig['world']);
  }
  return config;
}

async function runDetectionCommand(flags: EvalFlags, config: EvalConfig, outDir: string, cacheDir: string, log: (line: string) => void): Promise<void> {
  if (flags.thieves !== undefined) return runThievesCommand(flags, { config, outDir, cacheDir, log, fail });
  const positive = (value: string | undefined, flag: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) fail(`${flag} must be a positive integer, got "${value}"`);
    return n;
  };
  const attackerQueries = positive(flags.attackerQueries, '--attacker-queries');
  const clients = positive(flags.benignClients, '--benign-clients');
  const range = /^(\d+)-(\d+)$/.exec(flags.benignQueries ?? '20-100');
  const [minQueries, maxQueries] = range ? [Number(range[1]), Number(range[2])] : [0, 0];
  if (!range || minQueries < 1 || maxQueries < minQueries)
    fail(`--benign-queries must be MIN-MAX with 1 ≤ MIN ≤ MAX, e.g. 20-100; got "${flags.benignQueries}"`);
  let detection: Record<string, unknown> | undefined;
  try {
    detection = flags.detectionOptions === undefined ? undefined : (JSON.parse(flags.detectionOptions) as Record<string, unknown>);
  } catch (error) {
    fail(`--detection-options must be JSON, e.g. '{"ood":{"maxRate":0.2}}': ${(error as Error).message}`);
  }
  const { evaluateDetection } = await import('../../eval/detection/evaluate-detection.js');
  const started = Date.now();
  const { DetectionConfigError } = await import('../../detection/index.js');
  const { report, files } = await evaluateDetection({
    config,
    outDir,
    cacheDir,
    attackerQueries,
    benign: { clients, minQueries, maxQueries },
    detection,
    log,
    progress: (label, total) => createProgress({ label, total, silent: flags.quiet }),
  }).catch((error: unknown) => {
    if (error instanceof DetectionConfigError) fail(`--detection-options: ${error.message}`);
    throw error;
  });
  process.stdout.write(
    `benign: ${report.benign.flagged.any} of ${report.benign.clients} clients flagged (${Object.entries(report.benign.flagged)
      .map(([d, n]) => `${d} ${n}`)
      .join(', ')}); targets ${report.targets.met ? 'met' : 'not met'}\n`,
  );
  process.stdout.write(
    `detection: ${files.json} in ${((Date.now() - started) / 1000).toFixed(0)} s${files.insertedInto ? `; section added to ${files.insertedInto}` : ''}\n`,
  );
}

export function registerEvalCommand(program: Command): void {
  const command = program
    .command('eval')
    .description('steal the victim under every defense setting of a grid and report the trade-off (resumable)')
    .option('-p, --preset <name>', `grid preset: ${PRESET_NAMES.join(' | ')} (default quick)`)
    .option('-c, --config <file>', 'JSON grid; may start from a preset with "preset": "quick" and override fields')
    .option('--victim <dataset>', `victim dataset: ${VICTIM_DATASETS.join(' | ')}`)
    .option('--world <world>', 'attacker images: open (the other dataset) | closed (held-out victim training images)')
    .option('-o, --out <dir>', 'results folder (default results/<preset or config name>)')
    .option('--seed <n>', 'seed of every random choice (models, splits, policies)')
    .option('--cache-dir <dir>', 'where trained victims are kept (default .cache/eval-models)')
    .option('--seeds <n>', "attacker seeds per setting (victim fixed); tables show mean ± 95% CI (default: the preset's, quick 3)")
    .option('-j, --jobs <n>', `parallel processes for the runs (default: the core count, ${cpus().length} here)`)
    .option('-q, --quiet', 'no progress bars')
    .option('--report-only', 'write the report of the runs already finished in the results folder and run nothing (a long grid stopped midway)')
    .option(
      '--detection',
      'instead of the grid: per-client detection against the Knockoff and JBDA attackers and benign clients (detection.json, report section)',
    )
    .option('--attacker-queries <n>', 'with --detection: queries per attacker', '1000')
    .option('--benign-clients <n>', 'with --detection: benign clients', '120')
    .option('--benign-queries <min-max>', 'with --detection: queries per benign client, uniform in this range', '20-100')
    .option('--detection-options <json>', 'with --detection: detection options over the defaults, e.g. \'{"ood":{"maxRate":0.2}}\'');
  addExternalEvalOptions(addQueueOptions(addThiefFlags(command)))
    .option('--knockoff-epochs <n>', 'with --target: epochs of the final knockoffs (default: the quick preset’s)')
    .action(async (flags: EvalFlags) => {
      const queue = await queueOptionsFromFlags(flags, fail);
      if (flags.reportOnly) {
        const other = [flags.target !== undefined && '--target', flags.detection && '--detection', queue && '--queue'].filter(Boolean);
        if (other.length) fail(`--report-only reports a grid's finished runs; it does not go with ${other.join(', ')}`);
      }
      if (flags.target !== undefined) return runExternalEval(flags);
      let config: EvalConfig;
      try {
        config = await resolveConfig(flags);
      } catch (error) {
        if (error instanceof EvalConfigError) fail(error.message);
        throw error;
      }
      if (queue) checkGridForQueue(config, fail);
      const suffix = [config.victim === 'mnist' ? '' : config.victim, config.world === 'open' ? '' : 'closed'].filter(Boolean).join('-');
      const jobs = flags.jobs === undefined ? cpus().length : Number(flags.jobs);
      if (!Number.isSafeInteger(jobs) || jobs < 1) fail(`--jobs must be an integer ≥ 1, got "${flags.jobs}"`);
      const outDir = flags.out ?? join('results', suffix ? `${config.name}-${suffix}` : config.name);
      const cacheDir = flags.cacheDir ?? join(defaultCacheRoot(), 'eval-models');
      const log = (line: string) => process.stderr.write(`${line}\n`);
      const started = Date.now();
      if (flags.detection) {
        await runDetectionCommand(flags, config, outDir, cacheDir, log);
        return;
      }
      const result = await evaluate({
        config,
        outDir,
        cacheDir,
        jobs,
        queue,
        reportOnly: flags.reportOnly,
        log,
        progress: (label, total) => createProgress({ label, total, silent: flags.quiet }),
      });
      await writeFile(join(outDir, 'metrics.prom'), await result.registry.metrics());
      process.stdout.write(`\n${summaryText(result.records)}\n\n`);
      const seconds = (Date.now() - started) / 1000;
      process.stdout.write(
        flags.reportOnly
          ? `report only: ${result.records.length} of ${result.planned} runs finished\n`
          : `${result.ran} runs done, ${result.skipped} already finished, in ${seconds.toFixed(0)} s\n`,
      );
      const shown = relative(process.cwd(), result.files.html);
      process.stdout.write(`report: ${shown.startsWith('..') ? resolve(result.files.html) : shown}\n`);
      reportFailedRuns(result.failed);
    });
}
