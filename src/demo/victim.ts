/**
 * The demo's victim: an MLP trained for a few epochs on the given images, saved once and loaded on
 * later starts. Training data comes from the caller, so this file needs no dataset code.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import {
  accuracy,
  checkpointRecorder,
  createModel,
  DEFAULT_CHECKPOINTS,
  loadModel,
  readModelMeta,
  saveCheckpoints,
  saveModel,
  trainModel,
  writeModelMeta,
  type LayersModel,
  type TrainProgress,
} from '../models/index.js';

export interface LabelledRows {
  /** rows × features pixels in [0, 1]. */
  readonly x: Float32Array;
  readonly labels: ArrayLike<number>;
  readonly rows: number;
}

export interface DemoVictimOptions {
  dir: string;
  train: LabelledRows;
  test: LabelledRows;
  features: number;
  classes: number;
  epochs?: number;
  batchSize?: number;
  seed?: number;
  onProgress?: (progress: TrainProgress) => void;
}

export interface DemoVictim {
  model: LayersModel;
  testAccuracy: number;
  fromCache: boolean;
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

export async function loadOrTrainDemoVictim(options: DemoVictimOptions): Promise<DemoVictim> {
  const { dir, train, test } = options;
  if (await exists(join(dir, 'model.json'))) {
    const model = await loadModel(dir);
    const meta = await readModelMeta(dir);
    const testAccuracy = typeof meta?.testAccuracy === 'number' ? meta.testAccuracy : accuracy(model, test.x, test.labels, test.rows);
    return { model, testAccuracy, fromCache: true };
  }
  const model = createModel({ arch: 'mlp', inputShape: [options.features], classes: options.classes, seed: options.seed ?? 1 });
  // HODA's checkpoints: the weights at 11 evenly spaced points of training, saved beside the model.
  const recorder = checkpointRecorder(model, DEFAULT_CHECKPOINTS);
  try {
    await trainModel(
      model,
      { x: train.x, rows: train.rows, labels: Int32Array.from(train.labels) },
      { epochs: options.epochs ?? 3, batchSize: options.batchSize ?? 128, seed: options.seed ?? 1, onProgress: options.onProgress, onStep: recorder.onStep },
    );
  } catch (error) {
    model.dispose();
    throw error;
  }
  const testAccuracy = accuracy(model, test.x, test.labels, test.rows);
  await saveModel(model, dir);
  await saveCheckpoints(dir, recorder.checkpoints);
  await writeModelMeta(dir, { dataset: 'mnist', arch: 'mlp', classes: options.classes, inputShape: [options.features], testAccuracy, role: 'demo-victim' });
  return { model, testAccuracy, fromCache: false };
}
