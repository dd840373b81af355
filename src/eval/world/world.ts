/**
 * The data of one evaluation: the victim's training and test images, and the attacker's pool.
 * Open world: the attacker holds another dataset (FashionMNIST for an MNIST victim and the
 * reverse) and uses its class labels as the coarse classes of the adaptive policy. Closed world:
 * the attacker holds images of the victim's own training split, held out from the victim's training.
 */
import type { EvalConfig, VictimDataset } from '../config.js';
import type { AttackerPool } from '../policies/types.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';

/** Images and labels, row-major, as the datasets module gives them. */
export interface LabelledImages {
  x: Float32Array;
  labels: ArrayLike<number>;
  rows: number;
}

export interface DatasetLike {
  train: LabelledImages;
  test: LabelledImages;
  classes: number;
}

export type DatasetLoader = (name: VictimDataset) => Promise<DatasetLike>;

export interface EvaluationWorld {
  features: number;
  classes: number;
  victimTrain: LabelledImages;
  victimTest: LabelledImages;
  pool: AttackerPool;
  /** Where the pool came from, for the report. */
  poolSource: string;
}

export function otherDataset(victim: VictimDataset): VictimDataset {
  return victim === 'mnist' ? 'fashion-mnist' : 'mnist';
}

/** The rows at `indices`, copied. */
export function subset(images: LabelledImages, indices: ArrayLike<number>): LabelledImages {
  const features = images.x.length / Math.max(1, images.rows);
  const x = new Float32Array(indices.length * features);
  const labels = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const row = indices[i];
    x.set(images.x.subarray(row * features, (row + 1) * features), i * features);
    labels[i] = images.labels[row];
  }
  return { x, labels, rows: indices.length };
}

/** A seeded random `count` rows (all of them, shuffled, when count is undefined or larger). */
function sample(images: LabelledImages, count: number | undefined, seed: number): LabelledImages {
  if (count === undefined || count >= images.rows) return images;
  return subset(images, permutation(images.rows, seededRandom(seed)).subarray(0, count));
}

export async function buildWorld(config: EvalConfig, load: DatasetLoader): Promise<EvaluationWorld> {
  const victim = await load(config.victim);
  const features = victim.train.x.length / victim.train.rows;
  const { limits } = config;
  let victimTrain: LabelledImages;
  let pool: LabelledImages;
  let poolClasses: number;
  let poolSource: string;
  if (config.world === 'open') {
    const other = await load(otherDataset(config.victim));
    const otherFeatures = other.train.x.length / other.train.rows;
    if (otherFeatures !== features)
      throw new RangeError(`${otherDataset(config.victim)} images have ${otherFeatures} pixels, ${config.victim} images ${features}`);
    victimTrain = victim.train;
    pool = other.train;
    poolClasses = other.classes;
    poolSource = `${otherDataset(config.victim)} training split`;
  } else {
    // A seeded split of the victim's training images: the attacker's part is never trained on.
    const order = permutation(victim.train.rows, seededRandom(deriveSeed(config.seed, 'closed-world-split')));
    const held = Math.min(config.closedWorldPool, victim.train.rows - 1);
    pool = subset(victim.train, order.subarray(0, held));
    victimTrain = subset(victim.train, order.subarray(held));
    poolClasses = victim.classes;
    poolSource = `${held} held-out images of the ${config.victim} training split`;
  }
  victimTrain = sample(victimTrain, limits.victimTrain, deriveSeed(config.seed, 'victim-train-limit'));
  const victimTest = sample(victim.test, limits.victimTest, deriveSeed(config.seed, 'victim-test-limit'));
  pool = sample(pool, limits.attackerPool, deriveSeed(config.seed, 'attacker-pool-limit'));
  return {
    features,
    classes: victim.classes,
    victimTrain,
    victimTest,
    pool: { x: pool.x, rows: pool.rows, features, labels: pool.labels, classes: poolClasses },
    poolSource,
  };
}
