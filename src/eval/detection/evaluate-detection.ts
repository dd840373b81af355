/**
 * `msd eval --detection`: the victim of the config (trained with its checkpoints, or loaded from the
 * cache), its world's attacker pool, the attackers (Knockoff random and adaptive, JBDA, JB-self,
 * JB-top3) and benign clients through
 * a detecting endpoint; writes detection.json and the report section.
 */
import { mkdir } from 'node:fs/promises';
import { argmaxRows } from '../../defenses/index.js';
import type { DetectionOptions } from '../../detection/index.js';
import { initBackend, loadCheckpointModels, loadModel, predictProbs, Surrogate, type ContextProviders } from '../../models/index.js';
import { QUERY_POLICIES, type EvalConfig, type PolicyName } from '../config.js';
import type { ProgressFactory } from '../progress.js';
import { deriveSeed } from '../random.js';
import { writeDetectionReport } from '../report/detection-section.js';
import { prepareVictim } from '../victim.js';
import { buildWorld, type DatasetLoader } from '../world.js';
import { runDetectionEvaluation, type BenignSettings, type DetectionReport } from './run.js';
import { attackStream, type AttackerStream } from './streams.js';

export interface EvaluateDetectionOptions {
  config: EvalConfig;
  outDir: string;
  cacheDir: string;
  /** Queries per attacker (default 1000). */
  attackerQueries?: number;
  benign?: Partial<BenignSettings>;
  /** Over the detection's defaults, e.g. { ood: { maxRate: 0.2 } }. */
  detection?: DetectionOptions;
  /** The attackers (default: Knockoff random and adaptive, jbda, jbself, jbtop3; the defense-aware families need a defense, not a detector). */
  policies?: readonly PolicyName[];
  /** More attackers' streams (e.g. JBDA), beside the Knockoff ones. */
  extraStreams?: (context: { config: EvalConfig }) => AttackerStream[];
  loadDataset?: DatasetLoader;
  progress: ProgressFactory;
  log?: (line: string) => void;
}

export async function evaluateDetection(
  options: EvaluateDetectionOptions,
): Promise<{ report: DetectionReport; files: { json: string; html: string; insertedInto?: string } }> {
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
  const budget = options.attackerQueries ?? 1000;
  // Every attacker of the evaluation, whatever the config's grid runs.
  const streams = (options.policies ?? QUERY_POLICIES).map((policy) => attackStream(policy, world, config, budget, test));
  streams.push(...(options.extraStreams?.({ config }) ?? []));
  try {
    const report = await runDetectionEvaluation({
      victim: victim.model,
      checkpoints,
      victimTest: world.victimTest,
      features: world.features,
      classes: world.classes,
      streams,
      knockoff: config.knockoffTraining,
      seed: config.seed,
      providers,
      benign: options.benign,
      detection: options.detection,
      log,
    });
    await mkdir(options.outDir, { recursive: true });
    const files = await writeDetectionReport(options.outDir, report);
    return { report, files };
  } finally {
    victim.model.dispose();
    for (const m of checkpoints ?? []) m.dispose();
    providers.surrogate?.dispose();
  }
}
