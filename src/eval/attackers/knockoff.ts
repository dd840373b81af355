/**
 * The Knockoff Nets attacker (Orekondy et al., 2019): picks images from its own pool with a
 * policy, queries the defended endpoint over HTTP in batched requests, and trains a knockoff on
 * the answers with the soft-label cross-entropy. The stronger variant trains on the answers'
 * top-1 labels only, which strips the perturbation off any defense that keeps the top-1 class.
 * Both knockoffs are scored on the victim's test set: accuracy, and agreement with the
 * undefended victim's top-1.
 */
import type { ProbBatch } from '../../defenses/index.js';
import { createModel, fittingArchitecture, predictClasses, predictProbs, trainModel, type LayersModel } from '../../models/index.js';
import type { AttackerLabels } from '../config.js';
import { gatherRows } from '../endpoint/kserve-client.js';
import { accuracy, normaliseAnswers } from '../records/measures.js';
import { adaptivePolicy, type KnockoffProbe } from '../policies/adaptive.js';
import { randomPolicy } from '../policies/random.js';
import type { QueryPolicy } from '../policies/types.js';
import { deriveSeed } from '../random.js';
import type { AttackerOutcome } from '../records/run-record.js';
import { answerQuality } from './quality.js';
import { trainingTargets } from './top1.js';
import type { AttackOptions, AttackResult, TransferSet } from './types.js';

export type { AttackOptions, AttackResult, TransferSet, VictimTestSet } from './types.js';

/** Trains a fresh knockoff on the transfer set and scores it on the victim's test set. */
export async function trainKnockoff(
  transfer: Pick<TransferSet, 'x' | 'answers'>,
  labels: AttackerLabels,
  options: Pick<AttackOptions, 'classes' | 'inputShape' | 'knockoff' | 'test' | 'seed'>,
  onEpoch?: (epoch: number) => void,
): Promise<AttackerOutcome> {
  const { knockoff, test } = options;
  const model = createModel({
    arch: fittingArchitecture(knockoff.arch, options.inputShape),
    inputShape: options.inputShape,
    classes: options.classes,
    seed: deriveSeed(options.seed, `knockoff-${labels}`),
  });
  try {
    await trainModel(model, trainingTargets(transfer.x, transfer.answers, labels), {
      epochs: knockoff.epochs,
      batchSize: knockoff.batchSize,
      learningRate: knockoff.learningRate,
      seed: deriveSeed(options.seed, `knockoff-shuffle-${labels}`),
      loss: 'soft-ce',
      onProgress: (p) => p.epochDone && onEpoch?.(p.epoch),
    });
    const predicted = predictClasses(model, test.x, test.rows);
    return { labels, accuracy: accuracy(predicted, test.labels), agreement: accuracy(predicted, test.victimTop1) };
  } finally {
    model.dispose();
  }
}

/**
 * The adaptive policy's own knockoff: created at the first retraining, then trained further on the
 * whole transfer set so far at each interval (the loss reward asks what it still gets wrong).
 */
class PolicyKnockoff implements KnockoffProbe {
  private model: LayersModel | undefined;

  constructor(
    private readonly options: AttackOptions,
    private readonly answered: () => { x: Float32Array; rows: number; targets: Float32Array },
  ) {}

  predict(indices: Int32Array): ProbBatch | undefined {
    if (!this.model) return undefined;
    const { pool, classes } = this.options;
    return { rows: indices.length, cols: classes, data: predictProbs(this.model, gatherRows(pool.x, pool.features, indices), indices.length) };
  }

  async retrain(): Promise<void> {
    const { knockoff, adaptive, seed, classes, inputShape } = this.options;
    this.model ??= createModel({ arch: fittingArchitecture(knockoff.arch, inputShape), inputShape, classes, seed: deriveSeed(seed, 'policy-knockoff') });
    await trainModel(this.model, this.answered(), {
      epochs: adaptive.retrainEpochs,
      batchSize: knockoff.batchSize,
      learningRate: knockoff.learningRate,
      seed: deriveSeed(seed, 'policy-knockoff-shuffle'),
    });
  }

  dispose(): void {
    this.model?.dispose();
    this.model = undefined;
  }
}

/** The queries of one Knockoff attack: the transfer set as answered, and what it cost. */
export interface CollectedTransfer {
  transfer: TransferSet;
  queries: number;
  requests: number;
  picks?: number[];
}

/** Builds the transfer set through the endpoint with the run's policy (random or adaptive). */
export async function collectKnockoffTransfer(
  options: AttackOptions,
  policyName: 'random' | 'adaptive' = options.policy === 'adaptive' ? 'adaptive' : 'random',
): Promise<CollectedTransfer> {
  const { pool, client, budget, classes } = options;
  const features = pool.features;
  if (budget > pool.rows) throw new RangeError(`budget ${budget} exceeds the attacker's pool of ${pool.rows} images`);
  const x = new Float32Array(budget * features);
  const answers = new Float32Array(budget * classes);
  const indices = new Int32Array(budget);
  let answered = 0;
  const requestsBefore = client.requests;

  const probe = new PolicyKnockoff(options, () => ({
    x: x.subarray(0, answered * features),
    rows: answered,
    targets: answers.subarray(0, answered * classes),
  }));
  const policySeed = deriveSeed(options.seed, `policy-${policyName}`);
  const policy: QueryPolicy = policyName === 'random' ? randomPolicy(pool, policySeed) : adaptivePolicy(pool, options.adaptive, policySeed, probe);
  try {
    while (answered < budget) {
      const want = Math.min(options.requestRows, policy.preferredBatch ?? Infinity, budget - answered);
      const picked = policy.next(want);
      if (picked.length === 0) break;
      const rows = gatherRows(pool.x, features, picked);
      const answer = await client.infer(rows, picked.length, features);
      if (answer.cols !== classes) throw new RangeError(`the endpoint answered ${answer.cols} classes, the victim has ${classes}`);
      const normalised = normaliseAnswers(answer);
      x.set(rows, answered * features);
      answers.set(normalised.data, answered * classes);
      indices.set(picked, answered);
      answered += picked.length;
      options.onProgress?.('query', answered, budget);
      await policy.observe(picked, normalised);
    }
  } finally {
    probe.dispose();
  }
  const transfer: TransferSet = {
    x: x.subarray(0, answered * features),
    answers: { rows: answered, cols: classes, data: answers.subarray(0, answered * classes) },
    indices: indices.subarray(0, answered),
  };
  const picks = 'picks' in policy ? Array.from((policy as { picks: Int32Array }).picks) : undefined;
  return { transfer, queries: answered, requests: client.requests - requestsBefore, picks };
}

/** Trains and scores one knockoff per label variant (soft, top-1) on the transfer set. */
export async function trainKnockoffs(
  transfer: TransferSet,
  options: Pick<AttackOptions, 'classes' | 'inputShape' | 'knockoff' | 'test' | 'seed' | 'labels' | 'onProgress'>,
): Promise<AttackerOutcome[]> {
  const outcomes: AttackerOutcome[] = [];
  const totalEpochs = options.labels.length * options.knockoff.epochs;
  for (const [i, labels] of options.labels.entries()) {
    outcomes.push(await trainKnockoff(transfer, labels, options, (epoch) => options.onProgress?.('train', i * options.knockoff.epochs + epoch, totalEpochs)));
  }
  return outcomes;
}

/** Builds the transfer set through the endpoint, then trains and scores one knockoff per label variant. */
export async function runKnockoffAttack(options: AttackOptions): Promise<AttackResult> {
  const collected = await collectKnockoffTransfer(options);
  const quality = answerQuality(options.truth, collected.transfer.x, collected.transfer.answers);
  const outcomes = await trainKnockoffs(collected.transfer, options);
  return { ...collected, outcomes, ...(quality ? { quality } : {}) };
}
