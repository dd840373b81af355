/**
 * A toy victim for the attacker tests: a small MLP trained on a synthetic image set (8×8 images,
 * 4 classes), answering through a defense applied in process, as the middleware would (the
 * defense's context, such as the noise key, computed from the queried pixels).
 */
import { parseDefense, type Defense, type ProbBatch } from '../../../src/defenses/index.js';
import { presetConfig } from '../../../src/eval/config.js';
import type { InferenceClient } from '../../../src/eval/endpoint/kserve-client.js';
import { computeDefenseContext, createModel, initBackend, predictProbs, trainModel, type LayersModel } from '../../../src/models/index.js';
import { syntheticDataset } from './synthetic-data.js';

export const TOY_FEATURES = 64;
export const TOY_CLASSES = 4;

export interface ToyVictim {
  data: ReturnType<typeof syntheticDataset>;
  model: LayersModel;
  /** The undefended answers to any images. */
  clean(x: Float32Array, rows: number): ProbBatch;
  /** A client of the victim behind `defense`, counting the rows it answers. */
  client(defense: Defense | string): InferenceClient & { rows: number };
  dispose(): void;
}

export async function toyVictim(seed = 21): Promise<ToyVictim> {
  await initBackend({ log: () => {} });
  const data = syntheticDataset(seed, { train: 1200, test: 300, features: TOY_FEATURES, classes: TOY_CLASSES, noise: 0.5 });
  const model = createModel({ arch: 'mlp', inputShape: [TOY_FEATURES], classes: TOY_CLASSES, seed, hidden: [32] });
  await trainModel(
    model,
    { x: data.train.x, rows: data.train.rows, labels: Int32Array.from(data.train.labels) },
    { epochs: 8, batchSize: 32, seed, learningRate: 0.003, log: () => {} },
  );
  const clean = (x: Float32Array, rows: number): ProbBatch => ({ rows, cols: TOY_CLASSES, data: predictProbs(model, x, rows) });
  return {
    data,
    model,
    clean,
    client(spec) {
      const defense = typeof spec === 'string' ? parseDefense(spec, { noiseSecret: 'the-defender-secret' }) : spec;
      let requests = 0;
      let rows = 0;
      return {
        get requests() {
          return requests;
        },
        get rows() {
          return rows;
        },
        async infer(x, count) {
          requests += 1;
          rows += count;
          return defense.apply(clean(x, count), computeDefenseContext(defense.needs, x, count, {}));
        },
      };
    },
    dispose: () => model.dispose(),
  };
}

/** The common attack options on the toy task: the attacker's pool is the victim's training images (closed world). */
export function toyAttack(victim: ToyVictim, overrides: { budget: number; seed?: number; epochs?: number }) {
  const quick = presetConfig('quick');
  const { data } = victim;
  return {
    pool: { x: data.train.x, rows: data.train.rows, features: TOY_FEATURES, labels: data.train.labels, classes: TOY_CLASSES },
    budget: overrides.budget,
    requestRows: 120,
    classes: TOY_CLASSES,
    inputShape: [TOY_FEATURES],
    knockoff: { ...quick.knockoffTraining, arch: 'mlp' as const, epochs: overrides.epochs ?? 20, batchSize: 16 },
    adaptive: quick.adaptive,
    labels: ['soft', 'argmax'] as ('soft' | 'argmax')[],
    test: { x: data.test.x, rows: data.test.rows, labels: data.test.labels, victimTop1: data.test.labels },
    seed: overrides.seed ?? 7,
    jbda: { ...quick.jbda, seedSize: 40, roundEpochs: 3 },
    seedImages: data.train,
    smoothing: quick.smoothing,
    restorer: quick.restorer,
    truth: victim.clean,
  };
}
