/**
 * What the detection evaluations share (`msd eval --detection`, and `--thieves`): the config's world
 * and victim with its checkpoints, the victim's test set, the held-out part of it that calibrates
 * HODA, the detection's options, tiers and ladder, and the endpoint's client settings.
 */
import { mkdir } from 'node:fs/promises';
import { argmaxRows } from '../../defenses/index.js';
import { calibrateHoda, type DetectionOptions, type HodaCalibration } from '../../detection/index.js';
import {
  checkpointHardness,
  initBackend,
  loadCheckpointModels,
  loadModel,
  predictProbs,
  Surrogate,
  type ContextProviders,
  type LayersModel,
} from '../../models/index.js';
import type { VictimTestSet } from '../attackers/index.js';
import type { EvalConfig } from '../config.js';
import type { ProgressFactory } from '../progress.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';
import { prepareVictim } from '../world/victim.js';
import { buildWorld, subset, type DatasetLoader, type EvaluationWorld, type LabelledImages } from '../world/world.js';
import type { BenignSettings } from './run.js';

/** What `msd eval --detection` and `--thieves` both take: the config, where to write and cache, and the benign clients and detection over their defaults. */
export interface DetectionEvaluationOptions {
  config: EvalConfig;
  outDir: string;
  cacheDir: string;
  benign?: Partial<BenignSettings>;
  /** Over the detection's defaults, e.g. { ood: { maxRate: 0.2 } }. */
  detection?: DetectionOptions;
  loadDataset?: DatasetLoader;
  progress: ProgressFactory;
  log?: (line: string) => void;
}

export interface DetectionWorld {
  world: EvaluationWorld;
  victim: LayersModel;
  /** The victim's training checkpoints (HODA); undefined when it was trained before they were kept. */
  checkpoints: LayersModel[] | undefined;
  providers: ContextProviders;
  /** The victim's test split with its undefended top-1, to score knockoffs. */
  test: VictimTestSet;
  dispose(): void;
}

/** The config's world and victim (trained with its checkpoints, or loaded from the cache). */
export async function openDetectionWorld(
  config: EvalConfig,
  options: { cacheDir: string; progress: ProgressFactory; loadDataset?: DatasetLoader; log: (line: string) => void },
): Promise<DetectionWorld> {
  const { log } = options;
  await initBackend({ log });
  const loader = options.loadDataset ?? ((await import('../world/datasets.js')).loadDataset as DatasetLoader);
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
  return {
    world,
    victim: victim.model,
    checkpoints,
    providers,
    test: victimTestSet(victim.model, world.victimTest, world.classes),
    dispose: () => {
      victim.model.dispose();
      for (const m of checkpoints ?? []) m.dispose();
      providers.surrogate?.dispose();
    },
  };
}

/** What both evaluations' runs take from the world and the options. */
export interface SharedRunInputs {
  victim: LayersModel;
  checkpoints: LayersModel[] | undefined;
  victimTest: LabelledImages;
  features: number;
  classes: number;
  knockoff: EvalConfig['knockoffTraining'];
  seed: number;
  providers: ContextProviders;
  benign: Partial<BenignSettings> | undefined;
  detection: DetectionOptions | undefined;
  log: (line: string) => void;
}

export type ReportFiles = { json: string; html: string; insertedInto?: string };

/** Opens the world, runs the evaluation, writes its report files into outDir, and releases the models whatever happens. */
export async function withDetectionWorld<R>(
  options: DetectionEvaluationOptions,
  evaluate: (opened: DetectionWorld, shared: SharedRunInputs) => Promise<R>,
  write: (dir: string, report: R) => Promise<ReportFiles>,
): Promise<{ report: R; files: ReportFiles }> {
  const log = options.log ?? (() => {});
  const opened = await openDetectionWorld(options.config, { ...options, log });
  try {
    const { world } = opened;
    const report = await evaluate(opened, {
      victim: opened.victim,
      checkpoints: opened.checkpoints,
      victimTest: world.victimTest,
      features: world.features,
      classes: world.classes,
      knockoff: options.config.knockoffTraining,
      seed: options.config.seed,
      providers: opened.providers,
      benign: options.benign,
      detection: options.detection,
      log,
    });
    await mkdir(options.outDir, { recursive: true });
    return { report, files: await write(options.outDir, report) };
  } finally {
    opened.dispose();
  }
}

/** The test split with the victim's undefended top-1 per image. */
export function victimTestSet(victim: LayersModel, victimTest: LabelledImages, classes: number): VictimTestSet {
  const undefended = { rows: victimTest.rows, cols: classes, data: predictProbs(victim, victimTest.x, victimTest.rows) };
  return { x: victimTest.x, rows: victimTest.rows, labels: victimTest.labels, victimTop1: argmaxRows(undefended) };
}

/**
 * A seeded random part of the test split (`heldRows` images) held out for calibration, the rest for
 * the benign clients. Not the first rows: a test split's order may carry a shift (MNIST's first 5000
 * test images come from other writers than its last 5000), which would read as a false positive.
 */
export function holdOut(test: LabelledImages, heldRows: number, seed: number, label: string): { calibration: LabelledImages; benign: LabelledImages } {
  const order = permutation(test.rows, seededRandom(deriveSeed(seed, label)));
  return { calibration: subset(test, order.subarray(0, heldRows)), benign: subset(test, order.subarray(heldRows)) };
}

/** HODA's benign calibration from held-out images' hardness, in 20 seeded orders (the benign maximum taken over many chunks). */
export function calibrateHodaOn(hardness: Int8Array, bins: number, seed: number, label: string): HodaCalibration {
  const sequences = Array.from({ length: 20 }, (_, i) => {
    const order = permutation(hardness.length, seededRandom(deriveSeed(seed, `${label}-${i}`)));
    return Int8Array.from(order, (r) => hardness[r]);
  });
  return calibrateHoda(sequences, { bins, lengths: [100, 1000].filter((l) => l <= hardness.length) });
}

/**
 * The per-client detection's options (HODA's calibration added), the escalation tiers (MAD's when a
 * surrogate is there, reverse sigmoid's otherwise, then argmax) and the ladder through them.
 */
export function detectionTiers(
  detection: DetectionOptions | undefined,
  hoda: HodaCalibration | undefined,
  providers: ContextProviders,
): { detectionOptions: DetectionOptions; tiers: Record<string, string>; ladder: string[]; madTier: boolean } {
  const detectionOptions: DetectionOptions = { ...detection };
  if (hoda)
    detectionOptions.hoda = {
      // The owner's switch stays theirs: hoda { enabled: false } keeps per-client HODA off.
      ...(detection?.hoda?.enabled === false ? { enabled: false } : {}),
      benignHistogram: hoda.benignHistogram,
      thresholds: hoda.thresholds.map(({ length, threshold }) => ({ length, threshold })),
    };
  const madTier = providers.surrogate !== undefined;
  const tiers: Record<string, string> = madTier
    ? { 'mad-argmax': 'mad-argmax:eps=0.8', argmax: 'argmax' }
    : { 'reverse-sigmoid': 'reverse-sigmoid:beta=0.7,gamma=0.2', argmax: 'argmax' };
  const ladder = detectionOptions.policy?.steps ? [...detectionOptions.policy.steps] : Object.keys(tiers);
  detectionOptions.policy = { ...detectionOptions.policy, steps: ladder };
  return { detectionOptions, tiers, ladder, madTier };
}

/** HODA's hardness of a request's rows, for the endpoint's clients.hardness (undefined without checkpoints). */
export function hardnessOf(checkpoints: readonly LayersModel[] | undefined) {
  return checkpoints ? (inputs: { rows: number; data: Float32Array }) => checkpointHardness(checkpoints, inputs.data, inputs.rows) : undefined;
}

/** The endpoint's client settings in both evaluations: API-key identities, a memory store that forgets no one during a run. */
export const EVAL_CLIENTS = {
  identity: 'header:x-api-key',
  store: { memory: { maxClients: 1_000_000, ttlMs: 30 * 24 * 3_600_000 } },
} as const;
