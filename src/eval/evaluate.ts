/**
 * One evaluation: for every defense setting of the grid, serve the victim behind the real
 * middleware on loopback, measure the defender's side on the test set, let the Knockoff attacker
 * steal it under each policy and budget, and store each finished run at once. Runs already in
 * the results folder are skipped, so a restart loses at most the run in progress. At the end the
 * report is written and the Prometheus gauges hold the measured figures.
 */
import { Registry } from 'prom-client';
import { argmaxRows, parseDefense, type Defense, type ProbBatch } from '../defenses/index.js';
import { describeTrainingEngine, fittingArchitecture, initBackend, type BackendInfo } from '../models/index.js';
import { predictProbs, Surrogate, tf, type ContextProviders, type LayersModel } from '../models/index.js';
import { createServingMetrics, recordEvaluation, type ServingMetrics } from '../server/metrics.js';
import { attackerFamily, attackerName, type DefenseSetting, type EvalConfig } from './config.js';
import { startDefendedEndpoint } from './endpoint.js';
import { runAttack, seedFamily, whyNotRun, type VictimTestSet } from './attackers/index.js';
import { inferAll, kserveClient } from './kserve-client.js';
import { accuracy, defenderOutcome } from './measures.js';
import { silentProgress, type ProgressFactory } from './progress.js';
import { deriveSeed } from './random.js';
import { ablationSurrogate } from './surrogate-kinds.js';
import { writeReport, type ReportFiles } from './report/write.js';
import { largestBudget } from './report/selection.js';
import type { DefenderOutcome, RunRecord } from './results.js';
import { ResultsStore } from './results-store.js';
import { planRuns, runKey, type RunSpec } from './run-key.js';
import { prepareMisinformationModel, prepareVictim } from './victim.js';
import { runInParallel } from './parallel.js';
import { buildWorld, type DatasetLoader, type EvaluationWorld } from './world.js';
import type { FailedRun, QueueOptions } from './queue/coordinator.js';

export interface EvaluateOptions {
  config: EvalConfig;
  /** The results folder (runs.jsonl and the report). */
  outDir: string;
  /** Where trained victims and misinformation models are kept between evaluations. */
  cacheDir: string;
  /** Default: the project's MNIST / FashionMNIST loader. */
  loadDataset?: DatasetLoader;
  progress?: ProgressFactory;
  log?: (line: string) => void;
  /** Registry that receives the evaluation gauges at the end (default: a new one); each endpoint also sets them on its own. */
  registry?: Registry;
  /**
   * Processes that run the pending runs in parallel (default 1: in this process). Each child has its
   * own tfjs backend; every run's seeds depend only on the run, so the results equal a serial run's.
   */
  jobs?: number;
  /** Run the pending runs on a Redis queue's workers (`msd eval-worker`) instead of here (queue/coordinator.ts). */
  queue?: QueueOptions;
}

export interface EvaluationResult {
  /** The runs of this config, in plan order (finished now or earlier). */
  records: RunRecord[];
  ran: number;
  skipped: number;
  files: ReportFiles;
  registry: Registry;
  backend?: BackendInfo;
  /** With `queue`: the runs that failed on every try, with their logs (not in `records`). */
  failed?: FailedRun[];
}

/** Everything the runs of one evaluation share. */
export interface Session {
  config: EvalConfig;
  world: EvaluationWorld;
  victim: LayersModel;
  providers: ContextProviders;
  test: VictimTestSet;
  undefended: ProbBatch;
  victimAccuracy: number;
  progress: ProgressFactory;
  log: (line: string) => void;
}

async function defaultLoader(): Promise<DatasetLoader> {
  const { loadDataset } = await import('./datasets.js');
  return loadDataset as DatasetLoader;
}

export function buildDefense(setting: DefenseSetting, config: EvalConfig): Defense {
  // A fixed noise secret per seed: reruns give the same noisy answers.
  return setting.defense ?? parseDefense(setting.spec, { noiseSecret: `msd-eval-${config.seed}` });
}

const needsSurrogate = (d: Defense) => d.needs.includes('surrogate') || d.needs.includes('surrogateGram');

export async function openSession(
  config: EvalConfig,
  world: EvaluationWorld,
  defenses: Defense[],
  options: Pick<EvaluateOptions, 'cacheDir'>,
  progress: ProgressFactory,
  log: (line: string) => void,
): Promise<Session & { dispose(): void }> {
  const victim = await prepareVictim(config, world, options.cacheDir, progress);
  log(`victim: ${victim.fromCache ? 'loaded from' : 'trained and saved to'} ${victim.dir}`);
  const providers: ContextProviders = {};
  const disposers: (() => void)[] = [() => victim.model.dispose()];
  if (defenses.some(needsSurrogate)) {
    // The paper's best surrogate: the victim's architecture, randomly initialised, never trained.
    const surrogate = Surrogate.random({
      arch: config.surrogateArch,
      inputShape: [world.features],
      classes: world.classes,
      seed: deriveSeed(config.seed, 'surrogate'),
    });
    providers.surrogate = surrogate;
    disposers.push(() => surrogate.dispose());
  }
  if (defenses.some((d) => d.needs.includes('misinformation'))) {
    const misinformation = await prepareMisinformationModel(config, world, options.cacheDir, progress);
    log(
      `misinformation model: ${misinformation.fromCache ? 'loaded from' : 'trained and saved to'} ${misinformation.dir} (right on ${(misinformation.testAccuracy * 100).toFixed(1)}% of the test set)`,
    );
    providers.misinformation = misinformation.model;
    disposers.push(() => misinformation.model.dispose());
  }
  const undefended: ProbBatch = {
    rows: world.victimTest.rows,
    cols: world.classes,
    data: predictProbs(victim.model, world.victimTest.x, world.victimTest.rows),
  };
  const victimTop1 = argmaxRows(undefended);
  const victimAccuracy = accuracy(victimTop1, world.victimTest.labels);
  log(
    `victim test accuracy ${(victimAccuracy * 100).toFixed(2)}% on ${world.victimTest.rows} images; attacker pool: ${world.pool.rows} images (${world.poolSource})`,
  );
  return {
    config,
    world,
    victim: victim.model,
    providers,
    test: { x: world.victimTest.x, rows: world.victimTest.rows, labels: world.victimTest.labels, victimTop1 },
    undefended,
    victimAccuracy,
    progress,
    log,
    dispose: () => disposers.forEach((d) => d()),
  };
}

export function describeRun(run: Pick<RunSpec, 'defense' | 'policy' | 'budget'> & { attackerSeed?: number }): string {
  return `${run.defense.family}${run.defense.params ? ` ${run.defense.params}` : ''} · ${run.policy} · ${run.budget}${run.attackerSeed ? ` · seed #${run.attackerSeed + 1}` : ''}`;
}

/** The attacker's seed for one run: the first keeps the derivation used before seeds existed. */
export function attackSeed(config: EvalConfig, run: RunSpec): number {
  const family = seedFamily(run.policy);
  return deriveSeed(config.seed, run.attackerSeed === 0 ? `attack-${family}` : `attack-${family}-seed${run.attackerSeed}`);
}

/** Serves one defense setting and runs all its pending runs against it; `onRecord` stores each finished run. */
export async function runDefense(
  session: Session,
  setting: DefenseSetting,
  defense: Defense,
  runs: RunSpec[],
  onRecord: (record: RunRecord) => Promise<void>,
): Promise<void> {
  const { config, world } = session;
  const ablated = setting.surrogate ? ablationSurrogate(setting.surrogate, config, world, session.log) : undefined;
  const providers = ablated ? { ...session.providers, surrogate: ablated } : session.providers;
  const endpoint = await startDefendedEndpoint({ victim: session.victim, defense, providers });
  try {
    const client = kserveClient(endpoint.url);
    const bar = session.progress(`defender side: ${setting.family}`, world.victimTest.rows);
    const started = performance.now();
    const defended = await inferAll(client, world.victimTest.x, world.victimTest.rows, world.features, config.requestRows, (done) => bar.update(done));
    const defender: DefenderOutcome = defenderOutcome(session.undefended, defended, world.victimTest.labels);
    const defenderSeconds = (performance.now() - started) / 1000;
    bar.finish(`accuracy ${(defender.accuracy * 100).toFixed(2)}%, mean L1 ${defender.l1Mean.toFixed(3)}`);
    for (const run of runs) {
      const runStarted = performance.now();
      const runBar = session.progress(describeRun(run), run.budget);
      const attack = await runAttack({
        pool: world.pool,
        client,
        policy: run.policy,
        budget: run.budget,
        requestRows: config.requestRows,
        classes: world.classes,
        inputShape: [world.features],
        knockoff: config.knockoffTraining,
        adaptive: config.adaptive,
        jbda: config.jbda,
        seedImages: world.victimTrain,
        smoothing: config.smoothing,
        flip: config.smoothing.flip === 'auto' ? config.victim === 'fashion-mnist' : config.smoothing.flip,
        restorer: config.restorer,
        // Kerckhoffs: the attacker knows the defense's name and public parameters, not its secrets.
        known: { spec: setting.spec, defense: setting.defense, surrogateArch: config.surrogateArch, misinformation: config.misinformationTraining },
        labels: config.attackerLabels,
        test: session.test,
        seed: attackSeed(config, run),
        // Measurement only: the undefended victim's answers to the attacker's queries.
        truth: (x, rows) => ({ rows, cols: world.classes, data: predictProbs(session.victim, x, rows) }),
        onProgress: (phase, done, total) =>
          phase === 'query' ? runBar.update(done, 'querying') : runBar.update(run.budget, `training knockoffs, epoch ${done}/${total}`),
      });
      const record: RunRecord = {
        key: runKey(config, run),
        victim: config.victim,
        world: config.world,
        seed: config.seed,
        defense: setting.family,
        params: setting.params,
        spec: setting.spec,
        policy: run.policy,
        attacker: attackerFamily(run.policy),
        budget: run.budget,
        victimAccuracy: session.victimAccuracy,
        defender,
        attackers: attack.outcomes,
        queries: attack.queries,
        requests: attack.requests,
        // The defender-side pass is shared by the setting's runs; each carries its own attack time.
        seconds: (performance.now() - runStarted) / 1000 + (run === runs[0] ? defenderSeconds : 0),
        finishedAt: new Date().toISOString(),
        attackerSeed: run.attackerSeed,
        attackerFamily: attackerFamily(run.policy),
        knockoffArch: fittingArchitecture(config.knockoffTraining.arch, [world.features]),
        ...(attack.picks ? { policyPicks: attack.picks } : {}),
        ...(attack.quality ? { answerQuality: attack.quality } : {}),
        ...(attack.restorer ? { restorer: attack.restorer } : {}),
      };
      runBar.finish(attack.outcomes.map((o) => `${o.labels} ${(o.accuracy * 100).toFixed(1)}%`).join(', '));
      await onRecord(record);
      publishGauges(endpoint.guard.metrics, [record]);
    }
  } finally {
    await endpoint.close();
    ablated?.dispose();
  }
}

/** Sets the serving layer's gauges: per defense, the headline run (largest budget, random policy first). */
export function publishGauges(metrics: ServingMetrics, records: readonly RunRecord[]): void {
  const budget = largestBudget(records);
  const headline = new Map<string, RunRecord>();
  for (const record of records) {
    if (record.budget !== budget) continue;
    const current = headline.get(record.spec);
    if (!current || (current.policy !== 'random' && record.policy === 'random')) headline.set(record.spec, record);
  }
  for (const record of headline.values()) {
    const soft = record.attackers.find((a) => a.labels === 'soft') ?? record.attackers[0];
    recordEvaluation(metrics, { defense: record.spec, utilityLoss: Math.min(1, Math.max(0, record.defender.accuracyLoss)), attackerAccuracy: soft?.accuracy });
  }
}

function describeRecord(record: RunRecord): string {
  const attackers = record.attackers.map((a) => `${attackerName(record.policy, a.labels)} ${(a.accuracy * 100).toFixed(1)}%`).join(', ');
  const run = describeRun({
    defense: { family: record.defense, params: record.params, spec: record.spec },
    policy: record.policy,
    budget: record.budget,
    attackerSeed: record.attackerSeed,
  });
  return `${run}: defender ${(record.defender.accuracy * 100).toFixed(2)}% (loss ${(record.defender.accuracyLoss * 100).toFixed(2)} pt, L1 ${record.defender.l1Mean.toFixed(3)}), ${attackers}, ${record.seconds.toFixed(0)} s`;
}

/** Runs `pending` in this process, defense by defense (one endpoint per setting). */
export async function runSerially(
  config: EvalConfig,
  world: EvaluationWorld,
  pending: readonly RunSpec[],
  options: Pick<EvaluateOptions, 'cacheDir'>,
  progress: ProgressFactory,
  log: (line: string) => void,
  onRecord: (record: RunRecord) => Promise<void>,
): Promise<void> {
  const bySetting = new Map<DefenseSetting, RunSpec[]>();
  for (const run of pending) bySetting.set(run.defense, [...(bySetting.get(run.defense) ?? []), run]);
  const defenses = new Map([...bySetting.keys()].map((setting) => [setting, buildDefense(setting, config)]));
  const session = await openSession(config, world, [...defenses.values()], options, progress, log);
  try {
    for (const [setting, runs] of bySetting) await runDefense(session, setting, defenses.get(setting)!, runs, onRecord);
  } finally {
    session.dispose();
  }
}

export async function evaluate(options: EvaluateOptions): Promise<EvaluationResult> {
  const { config } = options;
  const log = options.log ?? (() => {});
  const progress = options.progress ?? silentProgress;
  const registry = options.registry ?? new Registry();
  const store = await ResultsStore.open(options.outDir);
  if (store.skippedLines.length) log(`results: skipped unreadable line(s) ${store.skippedLines.join(', ')} of ${store.file}`);
  const plan = planRuns(config);
  const keys = plan.map((run) => runKey(config, run));
  const pending = plan.filter((_, i) => !store.has(keys[i]));
  const skippedKeys = new Set(keys.filter((key) => store.has(key)));
  log(`${plan.length} runs planned, ${plan.length - pending.length} already finished in ${options.outDir}`);
  const skippedPairs = config.defenses.flatMap((d) => config.policies.map((p) => whyNotRun(p, d.spec)).filter((why): why is string => why !== undefined));
  if (skippedPairs.length) log(`not run: ${[...new Set(skippedPairs)].join('; ')}`);

  let backend: BackendInfo | undefined;
  let training: string | undefined;
  let failed: FailedRun[] | undefined;
  const tensorsBefore = tf.memory().numTensors;
  if (pending.length > 0) {
    backend = await initBackend({ log });
    training = await describeTrainingEngine();
    log(training);
    const world = await buildWorld(config, options.loadDataset ?? (await defaultLoader()));
    let done = 0;
    const onRecord = async (record: RunRecord) => {
      await store.append(record);
      done += 1;
      log(`[${done}/${pending.length}] ${describeRecord(record)}`);
    };
    const jobs = Math.max(1, Math.min(options.jobs ?? 1, pending.length));
    const custom = config.defenses.some((d) => d.defense !== undefined);
    if (jobs > 1 && custom && !options.queue) log('--jobs: the grid holds defenses given as objects, which cannot travel to other processes; running serially');
    if (options.queue)
      failed = await (await import('./queue/coordinator.js')).runOnQueue({
        config,
        world,
        pending,
        cacheDir: options.cacheDir,
        progress,
        log,
        onRecord,
        queue: options.queue,
      });
    else if (jobs > 1 && !custom) await runInParallel({ config, world, pending, jobs, cacheDir: options.cacheDir, progress, log, onRecord });
    else await runSerially(config, world, pending, options, progress, log, onRecord);
    const leaked = tf.memory().numTensors - tensorsBefore;
    if (leaked > 0) log(`warning: ${leaked} tensors were not freed`);
  }

  const records = keys.map((key) => store.get(key)).filter((r): r is RunRecord => r !== undefined);
  publishGauges(createServingMetrics({ registry }), records);
  const files = await writeReport(options.outDir, records, {
    name: config.name,
    victim: config.victim,
    world: config.world,
    seed: config.seed,
    generatedAt: new Date().toISOString(),
    notes: backend ? [`tfjs backend: ${backend.name}`, ...(training ? [training] : [])] : undefined,
  });
  // On a queue, runs that failed or were left to the workers when the coordinator stopped are not "ran".
  const ran = failed ? records.filter((r) => !skippedKeys.has(r.key)).length : pending.length;
  return { records, ran, skipped: plan.length - pending.length, files, registry, backend, ...(failed ? { failed } : {}) };
}
