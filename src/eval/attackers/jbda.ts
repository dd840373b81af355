/**
 * Jacobian-based dataset augmentation (Papernot et al., 2017) and its variants, as the
 * prediction-poisoning paper runs them (Orekondy et al., 2020). The attacker starts from a small
 * seed set of the victim's own distribution, queries it, trains a substitute F_A on the answers,
 * and each round synthesises new points near the substitute's decision boundaries, queries them
 * and retrains a fresh substitute on everything answered so far:
 *
 * - jbda:   x + λ_r·sign(∇ₓ CE(F_A(x), ŷ)), clipped to [0, 1]
 * - jbself: x − λ_r·sign(∇ₓ CE(F_A(x), ŷ)), the step the other way
 *   with λ_r = λ·(−1)^⌊r/τ⌋ (λ = 0.1, the sign flipped every τ = 5 rounds)
 * - jbtop-k: for each of the substitute's top-k classes other than the answer's top-1, a targeted
 *   L∞ PGD toward that class (8 iterations, step 0.01, radius 0.1); one query per target class.
 *
 * Every synthetic point goes through the defended endpoint and counts against the budget; the
 * last round is cut (a seeded choice of its candidates) so the attack stops exactly at the budget.
 * The final knockoffs are trained and scored like the Knockoff attacker's (knockoff.ts).
 *
 * With `restoration` (restorer-jbtop3), once the first part of the budget is answered the attacker
 * builds a restorer from it (restorer.ts) and from then on restores every answer, the earlier ones
 * included, before a substitute or the knockoffs train on it.
 */
import type { ProbBatch } from '../../defenses/index.js';
import { createModel, fittingArchitecture, lossGradientSign, predictProbs, trainModel, type LayersModel } from '../../models/index.js';
import type { JbdaSettings, JbdaVariant } from '../config.js';
import type { InferenceClient } from '../endpoint/kserve-client.js';
import { normaliseAnswers } from '../records/measures.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';
import type { RestorerReport } from '../records/run-record.js';
import type { LabelledImages } from '../world/world.js';
import { trainKnockoffs } from './knockoff.js';
import { answerQuality } from './quality.js';
import type { AttackOptions, AttackResult, TransferSet } from './types.js';

/** A restorer put in front of the attacker once `after` answers are in. */
export interface AnswerRestoration {
  after: number;
  /** Builds the restorer from the answers so far (as received). */
  build(set: { x: Float32Array; answers: ProbBatch }): Promise<{ restore(answers: ProbBatch): ProbBatch; report: RestorerReport; dispose(): void }>;
}

export interface JbdaAttackOptions extends Omit<AttackOptions, 'policy' | 'pool' | 'adaptive'> {
  variant: JbdaVariant;
  /** Images of the victim's distribution the attacker starts from (kept out of the scored test set). */
  seedSet: { x: Float32Array; rows: number };
  settings: JbdaSettings;
  restoration?: AnswerRestoration;
}

/** Rows of work per gradient computation (bounds the memory of one backward pass). */
const GRADIENT_CHUNK = 512;

export function isJbdaVariant(name: string): name is JbdaVariant {
  return name === 'jbda' || name === 'jbself' || /^jbtop\d+$/.test(name);
}

/** k of a jbtop-k variant (0 for jbda and jbself). */
export function topK(variant: JbdaVariant): number {
  const match = /^jbtop(\d+)$/.exec(variant);
  return match ? Number(match[1]) : 0;
}

/** The attacker's seed set: a seeded draw of `size` images of the victim's training split. */
export function jbdaSeedSet(images: LabelledImages, size: number, seed: number): { x: Float32Array; rows: number } {
  const rows = Math.min(size, images.rows);
  const features = images.x.length / Math.max(1, images.rows);
  const order = permutation(images.rows, seededRandom(seed)).subarray(0, rows);
  const x = new Float32Array(rows * features);
  order.forEach((row, i) => x.set(images.x.subarray(row * features, (row + 1) * features), i * features));
  return { x, rows };
}

/** λ of round r: the step size with its sign flipped every `flipEvery` rounds. */
export function roundStep(settings: Pick<JbdaSettings, 'lambda' | 'flipEvery'>, round: number): number {
  return Math.floor(round / settings.flipEvery) % 2 === 0 ? settings.lambda : -settings.lambda;
}

/** The answered transfer set, growing up to the budget: the answers as received and as used (restored). */
class TransferBuffer {
  readonly x: Float32Array;
  readonly answers: Float32Array;
  readonly raw: Float32Array;
  rows = 0;
  restore?: (answers: ProbBatch) => ProbBatch;

  constructor(
    readonly budget: number,
    readonly features: number,
    readonly classes: number,
  ) {
    this.x = new Float32Array(budget * features);
    this.answers = new Float32Array(budget * classes);
    this.raw = new Float32Array(budget * classes);
  }

  get remaining(): number {
    return this.budget - this.rows;
  }

  view(): { x: Float32Array; answers: Float32Array; rows: number } {
    return { x: this.x.subarray(0, this.rows * this.features), answers: this.answers.subarray(0, this.rows * this.classes), rows: this.rows };
  }
}

/**
 * Sends `rows` images through the endpoint in requests of at most `requestRows` and stores the
 * answers; `afterRequest` runs after each request (the restorer is built there once enough are in).
 */
async function queryInto(
  buffer: TransferBuffer,
  client: InferenceClient,
  x: Float32Array,
  rows: number,
  requestRows: number,
  onAnswered: (total: number) => void,
  afterRequest?: () => Promise<void>,
): Promise<void> {
  const { features, classes } = buffer;
  if (rows > buffer.remaining) throw new RangeError(`${rows} queries exceed the remaining budget of ${buffer.remaining}`);
  for (let start = 0; start < rows; start += requestRows) {
    const count = Math.min(requestRows, rows - start);
    const batch = x.subarray(start * features, (start + count) * features);
    const answer = normaliseAnswers(await client.infer(batch, count, features));
    if (answer.cols !== classes) throw new RangeError(`the endpoint answered ${answer.cols} classes, the victim has ${classes}`);
    buffer.x.set(batch, buffer.rows * features);
    buffer.raw.set(answer.data, buffer.rows * classes);
    buffer.answers.set(buffer.restore ? buffer.restore(answer).data : answer.data, buffer.rows * classes);
    buffer.rows += count;
    onAnswered(buffer.rows);
    await afterRequest?.();
  }
}

/** Pixels on the 1/255 grid the endpoint receives, so the substitute trains on what was answered. */
function quantise(x: Float32Array): Float32Array {
  for (let i = 0; i < x.length; i++) x[i] = Math.round(Math.min(1, Math.max(0, x[i])) * 255) / 255;
  return x;
}

function argmaxRow(data: ArrayLike<number>, row: number, cols: number): number {
  let best = 0;
  for (let c = 1; c < cols; c++) if (data[row * cols + c] > data[row * cols + best]) best = c;
  return best;
}

/** Runs `fn` over chunks of rows and concatenates the outputs. */
function chunked(rows: number, features: number, fn: (start: number, count: number) => Float32Array): Float32Array {
  const out = new Float32Array(rows * features);
  for (let start = 0; start < rows; start += GRADIENT_CHUNK) {
    const count = Math.min(GRADIENT_CHUNK, rows - start);
    out.set(fn(start, count), start * features);
  }
  return out;
}

/** jbda / jbself: one signed gradient step per chosen point. */
export function jacobianStep(substitute: LayersModel, x: Float32Array, targets: Float32Array, rows: number, step: number): Float32Array {
  const features = x.length / Math.max(1, rows);
  const classes = targets.length / Math.max(1, rows);
  return chunked(rows, features, (start, count) => {
    const points = x.slice(start * features, (start + count) * features);
    const sign = lossGradientSign(substitute, points, count, targets.subarray(start * classes, (start + count) * classes));
    for (let i = 0; i < points.length; i++) points[i] = Math.min(1, Math.max(0, points[i] + step * sign[i]));
    return points;
  });
}

/**
 * Targeted L∞ PGD toward `target[i]` for each row: x ← Π(x − step·sign(∇ₓ CE(F_A(x), e_target))),
 * Π projecting onto the radius-ball around the start and onto [0, 1].
 */
export function targetedPgd(substitute: LayersModel, x: Float32Array, target: Int32Array, classes: number, settings: JbdaSettings['pgd']): Float32Array {
  const rows = target.length;
  const features = x.length / Math.max(1, rows);
  return chunked(rows, features, (start, count) => {
    const origin = x.subarray(start * features, (start + count) * features);
    const points = origin.slice();
    const oneHot = new Float32Array(count * classes);
    for (let i = 0; i < count; i++) oneHot[i * classes + target[start + i]] = 1;
    for (let iteration = 0; iteration < settings.iterations; iteration++) {
      const sign = lossGradientSign(substitute, points, count, oneHot);
      for (let i = 0; i < points.length; i++) {
        const moved = points[i] - settings.step * sign[i];
        const low = Math.max(0, origin[i] - settings.radius);
        const high = Math.min(1, origin[i] + settings.radius);
        points[i] = Math.min(high, Math.max(low, moved));
      }
    }
    return points;
  });
}

/**
 * The next round's synthetic points, at most `limit` of them: the candidates (one per point, or k
 * per point for jbtop-k) are drawn in a seeded order and only the chosen ones are computed.
 */
export function synthesise(
  variant: JbdaVariant,
  substitute: LayersModel,
  set: { x: Float32Array; answers: Float32Array; rows: number },
  classes: number,
  round: number,
  limit: number,
  settings: JbdaSettings,
  seed: number,
): { x: Float32Array; rows: number } {
  const features = set.x.length / Math.max(1, set.rows);
  const k = topK(variant);
  const candidates = set.rows * Math.max(1, k);
  const take = Math.min(limit, candidates);
  const random = seededRandom(deriveSeed(seed, `jbda-round-${round}`));
  const chosen = take === candidates ? Int32Array.from({ length: take }, (_, i) => i) : permutation(candidates, random).subarray(0, take).sort();
  if (k === 0) {
    const x = new Float32Array(take * features);
    const targets = new Float32Array(take * classes);
    chosen.forEach((row, i) => {
      x.set(set.x.subarray(row * features, (row + 1) * features), i * features);
      targets.set(set.answers.subarray(row * classes, (row + 1) * classes), i * classes);
    });
    const direction = variant === 'jbself' ? -1 : 1;
    return { x: quantise(jacobianStep(substitute, x, targets, take, direction * roundStep(settings, round))), rows: take };
  }
  // jbtop-k: candidate c is point ⌊c/k⌋ toward its (c mod k)-th target.
  const points = new Set<number>();
  chosen.forEach((c) => points.add(Math.floor(c / k)));
  const pointList = [...points];
  const gathered = new Float32Array(pointList.length * features);
  pointList.forEach((row, i) => gathered.set(set.x.subarray(row * features, (row + 1) * features), i * features));
  const probs = predictProbs(substitute, gathered, pointList.length);
  const targetsOf = new Map<number, number[]>();
  pointList.forEach((row, i) => targetsOf.set(row, substituteTargets(probs, i, classes, argmaxRow(set.answers, row, classes), k)));
  const x = new Float32Array(take * features);
  const target = new Int32Array(take);
  chosen.forEach((c, i) => {
    const row = Math.floor(c / k);
    x.set(set.x.subarray(row * features, (row + 1) * features), i * features);
    target[i] = targetsOf.get(row)![c % k];
  });
  return { x: quantise(targetedPgd(substitute, x, target, classes, settings.pgd)), rows: take };
}

/** The substitute's k most probable classes other than `answer`, most probable first. */
export function substituteTargets(probs: Float32Array, row: number, classes: number, answer: number, k: number): number[] {
  const order = Array.from({ length: classes }, (_, c) => c).filter((c) => c !== answer);
  order.sort((a, b) => probs[row * classes + b] - probs[row * classes + a] || a - b);
  return order.slice(0, k);
}

/** Builds the transfer set round by round through the endpoint, then trains and scores the knockoffs. */
export async function runJbdaAttack(options: JbdaAttackOptions): Promise<AttackResult> {
  const { client, budget, classes, settings, variant } = options;
  const features = options.inputShape.reduce((a, b) => a * b, 1);
  if (options.seedSet.rows < 1) throw new RangeError('the JBDA seed set is empty');
  if (options.seedSet.x.length !== options.seedSet.rows * features)
    throw new RangeError(`the seed set holds ${options.seedSet.x.length} values, not ${options.seedSet.rows} images of ${features}`);
  const buffer = new TransferBuffer(budget, features, classes);
  const requestsBefore = client.requests;
  const onAnswered = (total: number) => options.onProgress?.('query', total, budget);
  let restorer: Awaited<ReturnType<AnswerRestoration['build']>> | undefined;
  const restoration = options.restoration;
  const afterRequest = restoration
    ? async () => {
        if (restorer || buffer.rows < Math.min(restoration.after, budget)) return;
        const rows = buffer.rows;
        restorer = await restoration.build({
          x: buffer.x.slice(0, rows * features),
          answers: { rows, cols: classes, data: buffer.raw.slice(0, rows * classes) },
        });
        buffer.restore = (answers) => restorer!.restore(answers);
        buffer.answers.set(restorer.restore({ rows, cols: classes, data: buffer.raw.subarray(0, rows * classes) }).data, 0);
      }
    : undefined;

  try {
    const seedRows = Math.min(settings.seedSize, options.seedSet.rows, budget);
    await queryInto(buffer, client, quantise(options.seedSet.x.slice(0, seedRows * features)), seedRows, options.requestRows, onAnswered, afterRequest);
    for (let round = 0; buffer.remaining > 0; round++) {
      const substitute = createModel({
        arch: fittingArchitecture(options.knockoff.arch, options.inputShape),
        inputShape: options.inputShape,
        classes,
        seed: deriveSeed(options.seed, `jbda-substitute-${round}`),
      });
      try {
        const set = buffer.view();
        await trainModel(
          substitute,
          { x: set.x, rows: set.rows, targets: set.answers },
          {
            epochs: settings.roundEpochs,
            batchSize: options.knockoff.batchSize,
            learningRate: options.knockoff.learningRate,
            seed: deriveSeed(options.seed, `jbda-shuffle-${round}`),
          },
        );
        const synthetic = synthesise(variant, substitute, set, classes, round, buffer.remaining, settings, options.seed);
        await queryInto(buffer, client, synthetic.x, synthetic.rows, options.requestRows, onAnswered, afterRequest);
      } finally {
        substitute.dispose();
      }
    }

    const set = buffer.view();
    const answers: ProbBatch = { rows: set.rows, cols: classes, data: set.answers };
    const transfer: TransferSet = { x: set.x, answers, indices: Int32Array.from({ length: set.rows }, (_, i) => i) };
    const raw: ProbBatch = { rows: set.rows, cols: classes, data: buffer.raw.subarray(0, set.rows * classes) };
    const quality = answerQuality(options.truth, set.x, raw, restorer ? answers : raw);
    const outcomes = await trainKnockoffs(transfer, options);
    return {
      outcomes,
      transfer,
      queries: set.rows,
      requests: client.requests - requestsBefore,
      ...(quality ? { quality } : {}),
      ...(restorer ? { restorer: restorer.report } : {}),
    };
  } finally {
    restorer?.dispose();
  }
}
