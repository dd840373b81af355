/**
 * `msd eval --detection --thieves SPECS`: the config's victim (trained with its checkpoints, or
 * loaded from the cache) and attacker pool, and thieves with many identities (sybil.ts) against
 * detection above the client (population-run.ts); writes population.json and the report section.
 */
import { mkdir } from 'node:fs/promises';
import { argmaxRows } from '../../defenses/index.js';
import type { DetectionOptions } from '../../detection/index.js';
import { initBackend, loadCheckpointModels, loadModel, predictProbs, Surrogate, type ContextProviders } from '../../models/index.js';
import type { FingerprintServingOptions, PopulationServingOptions } from '../../server/clients/options.js';
import type { EvalConfig } from '../config.js';
import type { ProgressFactory } from '../progress.js';
import { deriveSeed } from '../random.js';
import { prepareVictim } from '../victim.js';
import { buildWorld, type DatasetLoader } from '../world.js';
import { runPopulationEvaluation, type PopulationReport } from './population-run.js';
import { writePopulationReport } from './population-section.js';
import type { BenignSettings } from './run.js';
import { attackStream } from './streams.js';
import type { ThiefScenario } from './sybil.js';

export interface EvaluateThievesOptions {
  config: EvalConfig;
  outDir: string;
  cacheDir: string;
  scenarios: readonly ThiefScenario[];
  /** Queries per thief (default 10 000). */
  thiefQueries?: number;
  benign?: Partial<BenignSettings>;
  detection?: DetectionOptions;
  population?: PopulationServingOptions;
  fingerprints?: FingerprintServingOptions | false;
  spanMs?: number;
  loadDataset?: DatasetLoader;
  progress: ProgressFactory;
  log?: (line: string) => void;
}

export async function evaluateThieves(
  options: EvaluateThievesOptions,
): Promise<{ report: PopulationReport; files: { json: string; html: string; insertedInto?: string } }> {
  const { config } = options;
  const log = options.log ?? (() => {});
  await initBackend({ log });
  const loader = options.loadDataset ?? ((await import('../datasets.js')).loadDataset as DatasetLoader);
  const world = await buildWorld(config, loader);
  const victim = await prepareVictim(config, world, options.cacheDir, options.progress);
  log(`victim: ${victim.fromCache ? 'loaded from' : 'trained and saved to'} ${victim.dir}`);
  const checkpoints = await loadCheckpointModels(victim.dir, () => loadModel(victim.dir));
  if (!checkpoints) log('the victim has no training checkpoints (trained before they were kept): HODA off');
  const providers: ContextProviders = {
    surrogate: Surrogate.random({
      arch: config.surrogateArch,
      inputShape: [world.features],
      classes: world.classes,
      seed: deriveSeed(config.seed, 'surrogate'),
    }),
  };
  const undefended = { rows: world.victimTest.rows, cols: world.classes, data: predictProbs(victim.model, world.victimTest.x, world.victimTest.rows) };
  const test = { x: world.victimTest.x, rows: world.victimTest.rows, labels: world.victimTest.labels, victimTop1: argmaxRows(undefended) };
  const thiefQueries = options.thiefQueries ?? 10_000;
  try {
    const report = await runPopulationEvaluation({
      victim: victim.model,
      checkpoints,
      victimTest: world.victimTest,
      cover: world.victimTrain,
      features: world.features,
      classes: world.classes,
      scenarios: options.scenarios,
      streamFor: (scenario) => attackStream(scenario.policy as Exclude<typeof scenario.policy, 'none'>, world, config, thiefQueries, test),
      thiefQueries,
      knockoff: config.knockoffTraining,
      seed: config.seed,
      providers,
      benign: options.benign,
      detection: options.detection,
      population: options.population,
      fingerprints: options.fingerprints,
      spanMs: options.spanMs,
      log,
    });
    await mkdir(options.outDir, { recursive: true });
    const files = await writePopulationReport(options.outDir, report);
    return { report, files };
  } finally {
    victim.model.dispose();
    for (const m of checkpoints ?? []) m.dispose();
    providers.surrogate?.dispose();
  }
}
