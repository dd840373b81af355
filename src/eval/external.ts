/**
 * Evaluates a defended endpoint this project did not start (`msd eval --target`): the owner's
 * proxy or server, their transfer images and their labelled test set. The defender's side is the
 * target's accuracy on the test labels and, with the undefended `reference` endpoint, the L1
 * distance and the top-1 change rate between the two answers (without it those columns are NaN);
 * the attacker's side is every attacker family (Knockoff policies, JBDA variants) at every budget,
 * each query sent to the target and counted. The report is the evaluation's usual one.
 */
import { createHash } from 'node:crypto';
import { argmaxRows, type ProbBatch } from '../defenses/index.js';
import type { AdaptiveSettings, AttackerLabels, JbdaSettings, PolicyName, TrainingSettings } from './config.js';
import { attackerFamily } from './config.js';
import { runAttack } from './attack.js';
import type { ExternalImages } from './data/external-data.js';
import { inferAll, type InferenceClient } from './kserve-client.js';
import { accuracy, defenderOutcome } from './measures.js';
import { silentProgress, type ProgressFactory } from './progress.js';
import { deriveSeed } from './random.js';
import { writeReport, type ReportFiles } from './report/write.js';
import type { DefenderOutcome, RunRecord } from './results.js';

export interface ExternalEvaluationOptions {
  name: string;
  target: InferenceClient;
  /** Where the target is, for the report and the run keys. */
  targetUrl: string;
  reference?: InferenceClient;
  transfer: ExternalImages;
  test: ExternalImages & { labels: Int32Array };
  classes: number;
  policies: PolicyName[];
  budgets: number[];
  attackerLabels: AttackerLabels[];
  knockoff: TrainingSettings;
  adaptive: AdaptiveSettings;
  jbda: JbdaSettings;
  requestRows: number;
  seed: number;
  outDir: string;
  progress?: ProgressFactory;
  log?: (line: string) => void;
}

export interface ExternalEvaluationResult {
  records: RunRecord[];
  files: ReportFiles;
}

/** Checks what can be checked without a query: sizes, budgets against the transfer set. */
export function checkExternalPlan(options: Pick<ExternalEvaluationOptions, 'transfer' | 'test' | 'policies' | 'budgets' | 'jbda'>): void {
  const { transfer, test } = options;
  if (transfer.features !== test.features) throw new RangeError(`the transfer images hold ${transfer.features} values each, the test images ${test.features}`);
  const largest = Math.max(...options.budgets);
  if (options.policies.some((p) => p === 'random' || p === 'adaptive') && largest > transfer.rows) {
    throw new RangeError(`budget ${largest} exceeds the ${transfer.rows} transfer images (the Knockoff policies query each image once); lower the budget or give more images`);
  }
}

function undefinedOutcome(defended: ProbBatch, labels: ArrayLike<number>): DefenderOutcome {
  return { accuracy: accuracy(argmaxRows(defended), labels), accuracyLoss: Number.NaN, l1Mean: Number.NaN, l1Median: Number.NaN, top1ChangeRate: Number.NaN };
}

export async function evaluateExternal(options: ExternalEvaluationOptions): Promise<ExternalEvaluationResult> {
  checkExternalPlan(options);
  const log = options.log ?? (() => {});
  const progress = options.progress ?? silentProgress;
  const { test, transfer, classes } = options;
  const features = test.features;

  const bar = progress('defender side: target', test.rows);
  const defended = await inferAll(options.target, test.x, test.rows, features, options.requestRows, (done) => bar.update(done));
  if (defended.cols !== classes) throw new RangeError(`the target answered ${defended.cols} classes, --classes says ${classes}`);
  let undefended: ProbBatch | undefined;
  if (options.reference) {
    const refBar = progress('defender side: reference', test.rows);
    undefended = await inferAll(options.reference, test.x, test.rows, features, options.requestRows, (done) => refBar.update(done));
    refBar.finish();
    if (undefended.cols !== classes) throw new RangeError(`the reference answered ${undefended.cols} classes, --classes says ${classes}`);
  }
  const defender = undefended ? defenderOutcome(undefended, defended, test.labels) : undefinedOutcome(defended, test.labels);
  const victimAccuracy = undefended ? accuracy(argmaxRows(undefended), test.labels) : Number.NaN;
  bar.finish(`accuracy ${(defender.accuracy * 100).toFixed(2)}%${undefended ? `, mean L1 ${defender.l1Mean.toFixed(3)}` : ''}`);
  log(`target accuracy ${(defender.accuracy * 100).toFixed(2)}% on ${test.rows} test images${undefended ? `; reference ${(victimAccuracy * 100).toFixed(2)}%, mean L1 ${defender.l1Mean.toFixed(3)}, top-1 changed ${(defender.top1ChangeRate * 100).toFixed(2)}%` : ' (no --reference: L1 and top-1 changes not measured)'}`);

  const victimTop1 = argmaxRows(undefended ?? defended);
  const pool = { x: transfer.x, rows: transfer.rows, features, labels: transfer.labels ?? new Int32Array(transfer.rows), classes: transfer.classNames?.length ?? 1 };
  const records: RunRecord[] = [];
  for (const policy of options.policies) {
    for (const budget of options.budgets) {
      const started = performance.now();
      const runBar = progress(`${attackerFamily(policy)} · ${budget}`, budget);
      const attack = await runAttack({
        pool,
        client: options.target,
        policy,
        budget,
        requestRows: options.requestRows,
        classes,
        inputShape: [features],
        knockoff: options.knockoff,
        adaptive: options.adaptive,
        jbda: options.jbda,
        seedImages: { x: transfer.x, rows: transfer.rows, labels: pool.labels },
        labels: options.attackerLabels,
        test: { x: test.x, rows: test.rows, labels: test.labels, victimTop1 },
        seed: deriveSeed(options.seed, `attack-${policy}`),
        onProgress: (phase, done, total) => (phase === 'query' ? runBar.update(done, 'querying') : runBar.update(budget, `training knockoffs, epoch ${done}/${total}`)),
      });
      runBar.finish(attack.outcomes.map((o) => `${o.labels} ${(o.accuracy * 100).toFixed(1)}%`).join(', '));
      const identity = JSON.stringify({ target: options.targetUrl, policy, budget, seed: options.seed, knockoff: options.knockoff, transfer: transfer.source, test: test.source });
      const record: RunRecord = {
        key: `external-${policy}-${budget}-${createHash('sha256').update(identity).digest('hex').slice(0, 16)}`,
        victim: 'external',
        world: 'external',
        seed: options.seed,
        defense: 'target',
        params: '',
        spec: options.targetUrl,
        policy,
        attacker: attackerFamily(policy),
        budget,
        victimAccuracy,
        defender,
        attackers: attack.outcomes,
        queries: attack.queries,
        requests: attack.requests,
        seconds: (performance.now() - started) / 1000,
        finishedAt: new Date().toISOString(),
      };
      log(`${attackerFamily(policy)} · ${budget}: ${attack.outcomes.map((o) => `${o.labels === 'soft' ? 'knockoff' : 'argmax-knockoff'} ${(o.accuracy * 100).toFixed(1)}%`).join(', ')} (${attack.queries} queries, ${record.seconds.toFixed(0)} s)`);
      records.push(record);
    }
  }
  const files = await writeReport(options.outDir, records, { name: options.name, victim: `external ${options.targetUrl}`, world: 'external', seed: options.seed, generatedAt: new Date().toISOString() });
  return { records, files };
}
