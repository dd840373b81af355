/**
 * The models the defended endpoint runs: the victim (trained once per setting, then loaded from
 * the cache) and, when a misinformation defense is in the grid, the misinformation model.
 */
import { createHash } from 'node:crypto';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import {
  accuracy,
  checkpointRecorder,
  createModel,
  DEFAULT_CHECKPOINTS,
  saveCheckpoints,
  loadModel,
  MODEL_FILE,
  readModelMeta,
  saveModel,
  trainModel,
  writeModelMeta,
  type LayersModel,
} from '../../models/index.js';
import type { EvalConfig, TrainingSettings } from '../config.js';
import type { ProgressFactory } from '../progress.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';
import { stableJson } from '../stable-json.js';
import { subset, type EvaluationWorld } from './world.js';

export interface CachedModel {
  model: LayersModel;
  /** Top-1 accuracy on the victim's test set (of the true labels; for misinformation, how often it is still right). */
  testAccuracy: number;
  fromCache: boolean;
  dir: string;
}

interface ModelRecipe {
  kind: 'victim' | 'misinformation';
  training: TrainingSettings;
  loss: 'soft-ce' | 'misinformation';
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

function cacheKey(config: EvalConfig, world: EvaluationWorld, recipe: ModelRecipe): string {
  const identity = {
    kind: recipe.kind,
    victim: config.victim,
    seed: config.seed,
    training: recipe.training,
    loss: recipe.loss,
    trainRows: world.victimTrain.rows,
    // The closed world trains on the rest of the split, so the split is part of the model's identity.
    split: config.world === 'closed' ? config.closedWorldPool : 'all',
    limit: config.limits.victimTrain,
    // HODA's training checkpoints are saved with the model (victims trained before had none).
    checkpoints: DEFAULT_CHECKPOINTS,
  };
  return createHash('sha256').update(stableJson(identity)).digest('hex').slice(0, 12);
}

async function trainOrLoad(config: EvalConfig, world: EvaluationWorld, recipe: ModelRecipe, cacheDir: string, progress: ProgressFactory): Promise<CachedModel> {
  const dir = join(cacheDir, `${recipe.kind}-${config.victim}-${recipe.training.arch}-${cacheKey(config, world, recipe)}`);
  if (await exists(join(dir, MODEL_FILE))) {
    const model = await loadModel(dir);
    const meta = await readModelMeta(dir);
    const testAccuracy =
      typeof meta?.testAccuracy === 'number' ? meta.testAccuracy : accuracy(model, world.victimTest.x, world.victimTest.labels, world.victimTest.rows);
    return { model, testAccuracy, fromCache: true, dir };
  }
  const { training } = recipe;
  const model = createModel({
    arch: training.arch,
    inputShape: [world.features],
    classes: world.classes,
    seed: deriveSeed(config.seed, `${recipe.kind}-init`),
  });
  const train =
    training.maxRows === undefined || training.maxRows >= world.victimTrain.rows
      ? world.victimTrain
      : subset(
          world.victimTrain,
          permutation(world.victimTrain.rows, seededRandom(deriveSeed(config.seed, `${recipe.kind}-rows`))).subarray(0, training.maxRows),
        );
  const batches = Math.ceil(train.rows / training.batchSize);
  const bar = progress(`train ${recipe.kind} (${config.victim}, ${training.arch})`, training.epochs * batches);
  const recorder = checkpointRecorder(model, DEFAULT_CHECKPOINTS);
  try {
    await trainModel(
      model,
      { x: train.x, rows: train.rows, labels: Int32Array.from(train.labels) },
      {
        epochs: training.epochs,
        batchSize: training.batchSize,
        learningRate: training.learningRate,
        seed: deriveSeed(config.seed, `${recipe.kind}-shuffle`),
        loss: recipe.loss,
        onStep: recipe.kind === 'victim' ? recorder.onStep : undefined,
        onProgress: (p) =>
          bar.update((p.epoch - 1) * batches + p.batch, `epoch ${p.epoch}/${p.epochs} loss ${p.loss.toFixed(3)} acc ${(p.accuracy * 100).toFixed(1)}%`),
      },
    );
  } catch (error) {
    model.dispose();
    throw error;
  }
  const testAccuracy = accuracy(model, world.victimTest.x, world.victimTest.labels, world.victimTest.rows);
  bar.finish(`test accuracy ${(testAccuracy * 100).toFixed(2)}%`);
  await saveModel(model, dir);
  if (recorder.checkpoints.length) await saveCheckpoints(dir, recorder.checkpoints);
  await writeModelMeta(dir, {
    dataset: config.victim,
    arch: training.arch,
    classes: world.classes,
    inputShape: [world.features],
    testAccuracy,
    role: recipe.kind,
  });
  return { model, testAccuracy, fromCache: false, dir };
}

export function prepareVictim(config: EvalConfig, world: EvaluationWorld, cacheDir: string, progress: ProgressFactory): Promise<CachedModel> {
  return trainOrLoad(config, world, { kind: 'victim', training: config.victimTraining, loss: 'soft-ce' }, cacheDir, progress);
}

/** A model trained to put its mass on wrong classes: −log(1 − p_true) (Kariyappa & Qureshi). */
export function prepareMisinformationModel(config: EvalConfig, world: EvaluationWorld, cacheDir: string, progress: ProgressFactory): Promise<CachedModel> {
  return trainOrLoad(config, world, { kind: 'misinformation', training: config.misinformationTraining, loss: 'misinformation' }, cacheDir, progress);
}
