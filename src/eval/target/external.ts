/**
 * Evaluates a defended endpoint this project did not start (`msd eval --target`): the owner's
 * proxy or server, their transfer images and their labelled test set. The defender's side is the
 * target's accuracy on the test labels and, with the undefended `reference` endpoint, the L1
 * distance and the top-1 change rate between the two answers (without it those columns are NaN);
 * the attacker's side is every attacker family (Knockoff policies and their top-1 variant,
 * smoothing, restorer and inversion, which need the target's defense spec, and the JBDA variants)
 * at every budget, each query sent to the target and counted. With `reference`, the same attackers
 * steal the undefended endpoint too (the restorer and inversion excepted: nothing to undo there),
 * so the report's worst case shows what the defense buys. The report is the evaluation's usual one.
 */
import { createHash } from 'node:crypto';
import { argmaxRows, parseDefense, type ProbBatch } from '../../defenses/index.js';
import type { Architecture } from '../../models/index.js';
import type { AdaptiveSettings, AttackerLabels, JbdaSettings, PolicyName, RestorerSettings, SmoothingSettings, TrainingSettings } from '../config.js';
import { attackerFamily, attackerName, describeDefense, drawsFromPool } from '../config.js';
import { attackerApplies, runAttack, seedFamily, whyNotRun, type KnownDefense } from '../attackers/index.js';
import type { ExternalImages } from '../data/external-data.js';
import { inferAll, type InferenceClient } from '../endpoint/kserve-client.js';
import { accuracy, defenderOutcome } from '../records/measures.js';
import { silentProgress, type ProgressFactory } from '../progress.js';
import { deriveSeed } from '../random.js';
import { writeReport, type ReportFiles } from '../report/write.js';
import type { DefenderOutcome, RunRecord } from '../records/run-record.js';

export interface ExternalEvaluationOptions {
  name: string;
  target: InferenceClient;
  /** Where the target is, for the report and the run keys. */
  targetUrl: string;
  /** The target's defense spec, as the attacker knows it (Kerckhoffs): the restorer and inversion need it. */
  targetDefense?: string;
  reference?: InferenceClient;
  referenceUrl?: string;
  transfer: ExternalImages;
  test: ExternalImages & { labels: Int32Array };
  classes: number;
  policies: PolicyName[];
  budgets: number[];
  /** Attacker seeds per setting (default 1: every seed is another budget of queries to the owner's endpoint). */
  seeds?: number;
  attackerLabels: AttackerLabels[];
  knockoff: TrainingSettings;
  adaptive: AdaptiveSettings;
  jbda: JbdaSettings;
  smoothing: SmoothingSettings;
  restorer: RestorerSettings;
  /** The attacker's own surrogate (restorer against MAD / GRAD²) and misinformation model. */
  surrogateArch: Architecture;
  misinformation: TrainingSettings;
  /** [h, w, c] of one image, for the smoothing attacker's shifts (default: a square one-channel image). */
  imageShape?: readonly number[];
  requestRows: number;
  seed: number;
  outDir: string;
  /** Lines for the report's notes (the tfjs backend, the training engine). */
  notes?: string[];
  progress?: ProgressFactory;
  log?: (line: string) => void;
}

export interface ExternalEvaluationResult {
  records: RunRecord[];
  files: ReportFiles;
}

/** Checks what can be checked without a query: sizes, budgets against the transfer set, the defense-aware families' needs. */
export function checkExternalPlan(
  options: Pick<ExternalEvaluationOptions, 'transfer' | 'test' | 'policies' | 'budgets' | 'jbda' | 'targetDefense' | 'smoothing'>,
): void {
  const { transfer, test } = options;
  if (transfer.features !== test.features) throw new RangeError(`the transfer images hold ${transfer.features} values each, the test images ${test.features}`);
  const largest = Math.max(...options.budgets);
  const pooled = options.policies.filter(drawsFromPool);
  const needed = pooled.some((p) => p !== 'smoothing') ? largest : Math.ceil(largest / options.smoothing.copies);
  if (pooled.length > 0 && needed > transfer.rows) {
    throw new RangeError(
      `budget ${largest} needs ${needed} of the ${transfer.rows} transfer images (the Knockoff-based attackers query each image once); lower the budget or give more images`,
    );
  }
  if (options.targetDefense !== undefined) parseDefense(options.targetDefense);
  const aware = options.policies.filter((p) => p === 'restorer' || p === 'inversion' || p === 'restorer-jbtop3');
  if (aware.length > 0 && options.targetDefense === undefined)
    throw new RangeError(`${aware.join(', ')} know the target's defense (Kerckhoffs): give it with --target-defense SPEC, e.g. --target-defense mad:eps=0.5`);
  if (options.targetDefense !== undefined && options.policies.includes('inversion') && !attackerApplies('inversion', options.targetDefense)) {
    throw new RangeError(`inversion: ${options.targetDefense} has no closed-form inverse (only reverse sigmoid has one); leave inversion out of --attackers`);
  }
}

function undefinedOutcome(defended: ProbBatch, labels: ArrayLike<number>): DefenderOutcome {
  return { accuracy: accuracy(argmaxRows(defended), labels), accuracyLoss: Number.NaN, l1Mean: Number.NaN, l1Median: Number.NaN, top1ChangeRate: Number.NaN };
}

interface Endpoint {
  role: 'target' | 'reference';
  client: InferenceClient;
  url: string;
  family: string;
  params: string;
  defender: DefenderOutcome;
  known?: KnownDefense;
}

/** The defender's side: the target's answers to the test images, and with the reference the L1 and top-1 changes against the undefended ones. */
async function defenderSide(
  options: ExternalEvaluationOptions,
  progress: ProgressFactory,
  log: (line: string) => void,
): Promise<{ defender: DefenderOutcome; victimAccuracy: number; victimTop1: Int32Array }> {
  const { test, classes } = options;
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
  log(
    `target accuracy ${(defender.accuracy * 100).toFixed(2)}% on ${test.rows} test images${undefended ? `; reference ${(victimAccuracy * 100).toFixed(2)}%, mean L1 ${defender.l1Mean.toFixed(3)}, top-1 changed ${(defender.top1ChangeRate * 100).toFixed(2)}%` : ' (no --reference: L1 and top-1 changes not measured)'}`,
  );
  return { defender, victimAccuracy, victimTop1: argmaxRows(undefended ?? defended) };
}

/** The endpoints the attackers steal from: the target, and the reference (the report's "none" row) when given. */
function attackedEndpoints(options: ExternalEvaluationOptions, defender: DefenderOutcome, victimAccuracy: number): Endpoint[] {
  const described = options.targetDefense ? describeDefense(parseDefense(options.targetDefense)) : undefined;
  const endpoints: Endpoint[] = [
    {
      role: 'target',
      client: options.target,
      url: options.targetUrl,
      family: described?.family ?? 'target',
      params: described?.params ?? '',
      defender,
      known: described ? { spec: described.spec, surrogateArch: options.surrogateArch, misinformation: options.misinformation } : undefined,
    },
  ];
  if (options.reference) {
    // The same attackers against the undefended endpoint: the report's "none" row, what the defense buys.
    const clean: DefenderOutcome = { accuracy: victimAccuracy, accuracyLoss: 0, l1Mean: 0, l1Median: 0, top1ChangeRate: 0 };
    endpoints.push({
      role: 'reference',
      client: options.reference,
      url: options.referenceUrl ?? 'reference',
      family: 'none',
      params: '',
      defender: clean,
      known: { spec: 'none', surrogateArch: options.surrogateArch, misinformation: options.misinformation },
    });
  }
  return endpoints;
}

/** What every attack of the evaluation shares. */
interface AttackContext {
  options: ExternalEvaluationOptions;
  progress: ProgressFactory;
  log: (line: string) => void;
  pool: { x: Float32Array; rows: number; features: number; labels: Int32Array; classes: number };
  victimTop1: Int32Array;
  victimAccuracy: number;
}

/** One attack setting against one endpoint (policy, budget, attacker seed), as a run record. */
interface AttackSetting {
  endpoint: Endpoint;
  policy: PolicyName;
  budget: number;
  attackerSeed: number;
}

/** The run key: the setting and a hash of everything that identifies the run. */
function externalRunKey(options: ExternalEvaluationOptions, { endpoint, policy, budget, attackerSeed }: AttackSetting): string {
  const identity = JSON.stringify({
    target: endpoint.url,
    role: endpoint.role,
    defense: endpoint.known?.spec,
    policy,
    budget,
    seed: options.seed,
    attackerSeed,
    knockoff: options.knockoff,
    transfer: options.transfer.source,
    test: options.test.source,
  });
  return `external-${endpoint.role}-${policy}-${budget}${attackerSeed > 0 ? `-s${attackerSeed}` : ''}-${createHash('sha256').update(identity).digest('hex').slice(0, 16)}`;
}

async function attackEndpoint(context: AttackContext, setting: AttackSetting): Promise<RunRecord> {
  const { options, pool } = context;
  const { endpoint, policy, budget, attackerSeed } = setting;
  const { test, transfer, classes } = options;
  const seeds = options.seeds ?? 1;
  const started = performance.now();
  const family = seedFamily(policy);
  const runBar = context.progress(`${endpoint.role} · ${attackerFamily(policy)} · ${budget}${seeds > 1 ? ` · seed #${attackerSeed + 1}` : ''}`, budget);
  const attack = await runAttack({
    pool,
    client: endpoint.client,
    policy,
    budget,
    requestRows: options.requestRows,
    classes,
    inputShape: [test.features],
    imageShape: options.imageShape,
    knockoff: options.knockoff,
    adaptive: options.adaptive,
    jbda: options.jbda,
    smoothing: options.smoothing,
    // The owner's domain is unknown: no flips unless the settings say so.
    flip: options.smoothing.flip === true,
    restorer: options.restorer,
    known: endpoint.known,
    seedImages: { x: transfer.x, rows: transfer.rows, labels: pool.labels },
    labels: options.attackerLabels,
    test: { x: test.x, rows: test.rows, labels: test.labels, victimTop1: context.victimTop1 },
    seed: deriveSeed(options.seed, attackerSeed === 0 ? `attack-${family}` : `attack-${family}-seed${attackerSeed}`),
    onProgress: (phase, done, total) =>
      phase === 'query' ? runBar.update(done, 'querying') : runBar.update(budget, `training knockoffs, epoch ${done}/${total}`),
  });
  runBar.finish(attack.outcomes.map((o) => `${attackerName(policy, o.labels)} ${(o.accuracy * 100).toFixed(1)}%`).join(', '));
  const record: RunRecord = {
    key: externalRunKey(options, setting),
    victim: 'external',
    world: 'external',
    seed: options.seed,
    defense: endpoint.family,
    params: endpoint.params,
    spec: endpoint.url,
    policy,
    attacker: attackerFamily(policy),
    budget,
    victimAccuracy: context.victimAccuracy,
    defender: endpoint.defender,
    attackers: attack.outcomes,
    queries: attack.queries,
    requests: attack.requests,
    seconds: (performance.now() - started) / 1000,
    finishedAt: new Date().toISOString(),
    attackerSeed,
    attackerFamily: attackerFamily(policy),
    knockoffArch: options.knockoff.arch,
    ...(attack.restorer ? { restorer: attack.restorer } : {}),
  };
  context.log(
    `${endpoint.role} · ${attackerFamily(policy)} · ${budget}: ${attack.outcomes.map((o) => `${attackerName(policy, o.labels)} ${(o.accuracy * 100).toFixed(1)}%`).join(', ')} (${attack.queries} queries, ${record.seconds.toFixed(0)} s)${attack.restorer ? `; restorer L1 ${attack.restorer.defendedL1.toFixed(3)} → ${attack.restorer.restoredL1.toFixed(3)} on held-out shadow answers` : ''}`,
  );
  return record;
}

export async function evaluateExternal(options: ExternalEvaluationOptions): Promise<ExternalEvaluationResult> {
  checkExternalPlan(options);
  const log = options.log ?? (() => {});
  const progress = options.progress ?? silentProgress;
  const { test, transfer } = options;
  const seeds = options.seeds ?? 1;

  const { defender, victimAccuracy, victimTop1 } = await defenderSide(options, progress, log);
  const pool = {
    x: transfer.x,
    rows: transfer.rows,
    features: test.features,
    labels: transfer.labels ?? new Int32Array(transfer.rows),
    classes: transfer.classNames?.length ?? 1,
  };
  const context: AttackContext = { options, progress, log, pool, victimTop1, victimAccuracy };
  const records: RunRecord[] = [];
  for (const endpoint of attackedEndpoints(options, defender, victimAccuracy)) {
    for (const policy of options.policies) {
      const spec = endpoint.known?.spec ?? 'target';
      if (endpoint.known && !attackerApplies(policy, spec)) {
        log(`${endpoint.role}: ${whyNotRun(policy, spec)}; not run`);
        continue;
      }
      for (const budget of options.budgets) {
        for (let attackerSeed = 0; attackerSeed < seeds; attackerSeed++)
          records.push(await attackEndpoint(context, { endpoint, policy, budget, attackerSeed }));
      }
    }
  }
  const files = await writeReport(options.outDir, records, {
    name: options.name,
    victim: `external ${options.targetUrl}`,
    world: 'external',
    seed: options.seed,
    generatedAt: new Date().toISOString(),
    notes: options.notes,
  });
  return { records, files };
}
