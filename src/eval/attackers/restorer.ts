/**
 * The restorer (after D-DAE, Chen et al., IEEE S&P 2023): the attacker knows the defense and its
 * public parameters (Kerckhoffs), not its secrets (the noise key, the surrogate's weights, the
 * misinformation model). It
 *
 * 1. trains a shadow model: its own first knockoff, on the top-1 labels of the answers to the first
 *    part of its budget (hard labels make it as confident as a real victim; the restorer needs the
 *    shadow's answers to look like the victim's, not to be right);
 * 2. applies the same defense to the shadow's answers on its own images, with its own surrogate (a
 *    random network of the public architecture), its own noise key and, for adaptive misinformation,
 *    its own misinformation model (trained on the shadow's labels); the shadow's softmax is taken at
 *    several temperatures so that the pairs cover confident and unsure answers;
 * 3. trains a small network, K → hidden → K with a softmax, to map the defended answers (read as
 *    centred log-probabilities) back to the clean ones (soft cross-entropy), and measures it on
 *    held-out pairs (mean L1 to the clean answers);
 * 4. restores every answer of the victim (the shadow's queries included) and trains the knockoff on
 *    the restored answers.
 *
 * In front of JB-top3 (restorer-jbtop3) the same restorer is built once the first part of the budget
 * is answered, and from then on every answer is restored before the substitutes train on it.
 */
import { parseDefense, type Defense, type ProbBatch } from '../../defenses/index.js';
import {
  computeDefenseContext,
  createModel,
  fittingArchitecture,
  predictLogits,
  predictProbs,
  Surrogate,
  trainModel,
  type Architecture,
  type ContextProviders,
  type LayersModel,
} from '../../models/index.js';
import type { RestorerSettings, TrainingSettings } from '../config.js';
import { normaliseAnswers } from '../records/measures.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';
import type { RestorerReport } from '../records/run-record.js';
import { collectKnockoffTransfer, trainKnockoffs } from './knockoff.js';
import { answerQuality } from './quality.js';
import { top1Labels } from './top1.js';
import type { AttackOptions, AttackResult } from './types.js';

/** The defense as the attacker knows it: its name and public parameters. */
export interface KnownDefense {
  /** The defense's spec ("mad:eps=0.5,…"); an ablation suffix (" @ surrogate=…") is ignored. */
  spec: string;
  /** A ready defense object (programmatic grids); used as it is, secrets included. */
  defense?: Defense;
  /** Architecture of the attacker's own random surrogate (MAD, GRAD²). */
  surrogateArch: Architecture;
  /** Training of the attacker's own misinformation model (adaptive misinformation). */
  misinformation: TrainingSettings;
}

export interface Restorer {
  restore(answers: ProbBatch): ProbBatch;
  readonly report: RestorerReport;
  dispose(): void;
}

export interface BuildRestorerOptions {
  known: KnownDefense;
  /** Answered queries that train the shadow (their top-1 labels). */
  shadowSet: { x: Float32Array; answers: ProbBatch };
  /** The attacker's own images, on which the shadow answers and the defense is applied. */
  images: { x: Float32Array; rows: number };
  settings: RestorerSettings;
  /** The shadow's architecture and training (the knockoff's). */
  knockoff: TrainingSettings;
  inputShape: readonly number[];
  classes: number;
  seed: number;
}

/** The attacker's copy of the defense: its own secret for noise, never the defender's. */
export function attackerDefense(known: KnownDefense, seed: number): Defense {
  return known.defense ?? parseDefense(known.spec.split(' @ ')[0], { noiseSecret: `attacker-${seed}` });
}

const CHUNK = 2048;

/** Row-wise softmax of logits / T_r. */
function softmaxAt(logits: Float32Array, rows: number, classes: number, temperatures: Float64Array): Float32Array {
  const out = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) {
    const o = r * classes;
    const temperature = temperatures[r];
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[o + c] / temperature);
    let sum = 0;
    for (let c = 0; c < classes; c++) {
      out[o + c] = Math.exp(logits[o + c] / temperature - max);
      sum += out[o + c];
    }
    for (let c = 0; c < classes; c++) out[o + c] /= sum;
  }
  return out;
}

/**
 * Answers of every confidence: logits N(0, s²) with s log-uniform in [0.3, 4], plus a margin uniform
 * in [0, 16] on one random class. Paired with the attacker's real images, so input-dependent defenses
 * (MAD's surrogate, the noise key, misinformation) still see real inputs.
 */
function syntheticAnswers(rows: number, classes: number, random: () => number): Float32Array {
  const logits = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) {
    const spread = Math.exp(Math.log(0.3) + (Math.log(4) - Math.log(0.3)) * random());
    for (let c = 0; c < classes; c++) logits[r * classes + c] = spread * Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
    logits[r * classes + Math.floor(random() * classes)] += 16 * random();
  }
  return softmaxAt(logits, rows, classes, new Float64Array(rows).fill(1));
}

/** Smallest probability the restorer distinguishes: log(1e-6) stands for every smaller one, 0 included. */
const LOG_FLOOR = Math.log(1e-6);

/**
 * What the restorer network reads: each defended answer as centred log-probabilities (its logits,
 * up to the softmax's free constant), so that small and large entries, and rows that differ only in
 * normalisation, are on one scale.
 */
export function restorerInput(answers: Float32Array, rows: number, classes: number): Float32Array {
  const out = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) {
    const o = r * classes;
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.max(0, answers[o + c]);
    let mean = 0;
    for (let c = 0; c < classes; c++) {
      out[o + c] = sum > 0 ? Math.max(LOG_FLOOR, Math.log(Math.max(0, answers[o + c]) / sum)) : 0;
      mean += out[o + c];
    }
    mean /= classes;
    for (let c = 0; c < classes; c++) out[o + c] -= mean;
  }
  return out;
}

function meanL1(a: Float32Array, b: Float32Array, rows: number, classes: number): number {
  let total = 0;
  for (let i = 0; i < rows * classes; i++) total += Math.abs(a[i] - b[i]);
  return rows ? total / rows : 0;
}

/** The attacker's providers for its copy of the defense: a random surrogate, a misinformation model of its own. */
async function attackerProviders(
  defense: Defense,
  options: BuildRestorerOptions,
  images: { x: Float32Array; rows: number },
  shadowLabels: () => Int32Array,
): Promise<{ providers: ContextProviders; dispose(): void }> {
  const providers: ContextProviders = {};
  const disposers: (() => void)[] = [];
  const features = options.inputShape.reduce((a, b) => a * b, 1);
  if (defense.needs.includes('surrogate') || defense.needs.includes('surrogateGram')) {
    const surrogate = Surrogate.random({
      arch: options.known.surrogateArch,
      inputShape: [features],
      classes: options.classes,
      seed: deriveSeed(options.seed, 'restorer-surrogate'),
    });
    providers.surrogate = surrogate;
    disposers.push(() => surrogate.dispose());
  }
  if (defense.needs.includes('misinformation')) {
    const training = options.known.misinformation;
    const model = createModel({
      arch: fittingArchitecture(training.arch, [features]),
      inputShape: [features],
      classes: options.classes,
      seed: deriveSeed(options.seed, 'restorer-misinformation'),
    });
    const rows = Math.min(images.rows, training.maxRows ?? images.rows);
    await trainModel(
      model,
      { x: images.x.subarray(0, rows * features), rows, labels: shadowLabels().subarray(0, rows) },
      {
        epochs: training.epochs,
        batchSize: training.batchSize,
        learningRate: training.learningRate,
        seed: deriveSeed(options.seed, 'restorer-misinformation-shuffle'),
        loss: 'misinformation',
      },
    );
    providers.misinformation = model;
    disposers.push(() => model.dispose());
  }
  return { providers, dispose: () => disposers.forEach((d) => d()) };
}

/** Builds the restorer: shadow, defended pairs, the K→hidden→K network, its held-out L1. */
export async function buildRestorer(options: BuildRestorerOptions): Promise<Restorer> {
  const { settings, classes, inputShape, seed } = options;
  const features = inputShape.reduce((a, b) => a * b, 1);
  const defense = attackerDefense(options.known, seed);

  // 1. The shadow: the attacker's first knockoff, on the top-1 labels of its first answers.
  const shadow = createModel({ arch: fittingArchitecture(options.knockoff.arch, inputShape), inputShape, classes, seed: deriveSeed(seed, 'restorer-shadow') });
  let restorer: LayersModel | undefined;
  try {
    const shadowRows = options.shadowSet.answers.rows;
    await trainModel(
      shadow,
      { x: options.shadowSet.x, rows: shadowRows, labels: top1Labels(options.shadowSet.answers) },
      {
        epochs: settings.shadowEpochs,
        batchSize: options.knockoff.batchSize,
        learningRate: options.knockoff.learningRate,
        seed: deriveSeed(seed, 'restorer-shadow-shuffle'),
      },
    );

    // 2. Pairs: the shadow's answers on the attacker's own images, clean and defended by the attacker's copy,
    // each image `draws` times at temperatures drawn log-uniformly over the settings' range.
    const low = Math.log(Math.min(...settings.temperatures));
    const high = Math.log(Math.max(...settings.temperatures));
    const draws = Math.max(1, settings.temperatures.length);
    const temperatureRandom = seededRandom(deriveSeed(seed, 'restorer-temperatures'));
    const perTemperature = Math.max(1, Math.min(options.images.rows, Math.ceil(settings.pairs / draws)));
    const order = permutation(options.images.rows, seededRandom(deriveSeed(seed, 'restorer-images'))).subarray(0, perTemperature);
    const x = new Float32Array(perTemperature * features);
    order.forEach((row, i) => x.set(options.images.x.subarray(row * features, (row + 1) * features), i * features));
    const logits = predictLogits(shadow, x, perTemperature);
    const labels = () => top1Labels({ rows: perTemperature, cols: classes, data: logits });
    const kit = await attackerProviders(defense, options, { x, rows: perTemperature }, labels);
    const pairs = perTemperature * draws;
    const clean = new Float32Array(pairs * classes);
    const defended = new Float32Array(pairs * classes);
    try {
      for (let start = 0; start < perTemperature; start += CHUNK) {
        const rows = Math.min(CHUNK, perTemperature - start);
        const chunkX = x.subarray(start * features, (start + rows) * features);
        const context = computeDefenseContext(defense.needs, chunkX, rows, kit.providers);
        const chunkLogits = logits.subarray(start * classes, (start + rows) * classes);
        for (let t = 0; t < draws; t++) {
          const temperature = Float64Array.from({ length: rows }, () => Math.exp(low + (high - low) * temperatureRandom()));
          // Every other draw: synthetic answers, so the pairs also cover what the shadow never says.
          const y = t % 2 === 1 && settings.synthetic ? syntheticAnswers(rows, classes, temperatureRandom) : softmaxAt(chunkLogits, rows, classes, temperature);
          const answer = normaliseAnswers(defense.apply({ rows, cols: classes, data: y }, context));
          const at = (t * perTemperature + start) * classes;
          clean.set(y, at);
          defended.set(answer.data, at);
        }
      }
    } finally {
      kit.dispose();
    }

    // 3. The restorer, trained on all pairs but a held-out share.
    const shuffled = permutation(pairs, seededRandom(deriveSeed(seed, 'restorer-pairs')));
    const heldOut = Math.max(1, Math.min(pairs - 1, Math.round(pairs * settings.heldOut)));
    const take = (indices: Int32Array, source: Float32Array) => {
      const out = new Float32Array(indices.length * classes);
      indices.forEach((row, i) => out.set(source.subarray(row * classes, (row + 1) * classes), i * classes));
      return out;
    };
    const trainRows = shuffled.subarray(heldOut);
    const testRows = shuffled.subarray(0, heldOut);
    restorer = createModel({ arch: 'mlp', inputShape: [classes], classes, hidden: [settings.hidden], seed: deriveSeed(seed, 'restorer-net') });
    await trainModel(
      restorer,
      { x: restorerInput(take(trainRows, defended), trainRows.length, classes), rows: trainRows.length, targets: take(trainRows, clean) },
      {
        epochs: settings.epochs,
        batchSize: 128,
        learningRate: 0.001,
        seed: deriveSeed(seed, 'restorer-net-shuffle'),
      },
    );
    const testIn = take(testRows, defended);
    const testClean = take(testRows, clean);
    const restoredTest = predictProbs(restorer, restorerInput(testIn, heldOut, classes), heldOut);
    const report: RestorerReport = {
      shadowQueries: shadowRows,
      pairs,
      heldOut,
      defendedL1: meanL1(testIn, testClean, heldOut, classes),
      restoredL1: meanL1(restoredTest, testClean, heldOut, classes),
    };
    const model = restorer;
    restorer = undefined;
    return {
      report,
      restore(answers: ProbBatch): ProbBatch {
        if (answers.cols !== classes) throw new RangeError(`the restorer takes ${classes} classes, got ${answers.cols}`);
        return {
          rows: answers.rows,
          cols: classes,
          data: answers.rows ? predictProbs(model, restorerInput(answers.data, answers.rows, classes), answers.rows) : new Float32Array(0),
        };
      },
      dispose: () => model.dispose(),
    };
  } finally {
    shadow.dispose();
    restorer?.dispose();
  }
}

export interface RestorerAttackOptions extends AttackOptions {
  known: KnownDefense;
  restorer: RestorerSettings;
}

/** Rows of the budget that train the shadow. */
export function shadowQueries(budget: number, settings: Pick<RestorerSettings, 'shadowFraction'>): number {
  return Math.max(1, Math.min(budget, Math.round(budget * settings.shadowFraction)));
}

/**
 * The restorer in front of the Knockoff attacker: the random policy's transfer set (its queries do
 * not depend on the answers, so the shadow may train on the first part once all are in), the
 * restorer built from the first part, and the knockoffs trained on every answer restored.
 */
export async function runRestorerAttack(options: RestorerAttackOptions): Promise<AttackResult> {
  const collected = await collectKnockoffTransfer(options, 'random');
  const { transfer } = collected;
  const features = options.pool.features;
  const shadowRows = shadowQueries(transfer.answers.rows, options.restorer);
  const restorer = await buildRestorer({
    known: options.known,
    shadowSet: {
      x: transfer.x.subarray(0, shadowRows * features),
      answers: { rows: shadowRows, cols: transfer.answers.cols, data: transfer.answers.data.subarray(0, shadowRows * transfer.answers.cols) },
    },
    images: options.pool,
    settings: options.restorer,
    knockoff: options.knockoff,
    inputShape: options.inputShape,
    classes: options.classes,
    seed: options.seed,
  });
  try {
    const restored = restorer.restore(transfer.answers);
    const quality = answerQuality(options.truth, transfer.x, transfer.answers, restored);
    const outcomes = await trainKnockoffs({ ...transfer, answers: restored }, options);
    return { ...collected, transfer: { ...transfer, answers: restored }, outcomes, restorer: restorer.report, ...(quality ? { quality } : {}) };
  } finally {
    restorer.dispose();
  }
}
