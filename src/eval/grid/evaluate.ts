/**
 * One evaluation of a grid (`msd eval`): for every defense setting, serve the victim behind the
 * real middleware on loopback, measure the defender's side on the test set, let every attacker
 * family steal it at each budget, and store each finished run at once (the runs: run/session.ts,
 * here, in `--jobs` children or on a queue's workers). Runs already in the results folder are
 * skipped, so a restart loses at most the run in progress. At the end the report is written and
 * the Prometheus gauges hold the measured figures.
 */
import { Registry } from 'prom-client';
import { describeTrainingEngine, initBackend, tf, type BackendInfo } from '../../models/index.js';
import { createServingMetrics } from '../../server/metrics.js';
import { whyNotRun } from '../attackers/index.js';
import { attackerName, type EvalConfig } from '../config.js';
import { silentProgress, type ProgressFactory } from '../progress.js';
import type { FailedRun, QueueOptions } from '../queue/coordinator.js';
import { publishGauges } from '../report/gauges.js';
import { writeReport, type ReportFiles } from '../report/write.js';
import { ResultsStore } from '../records/results-store.js';
import type { RunRecord } from '../records/run-record.js';
import { runInParallel } from '../run/parallel.js';
import { planRuns, runKey } from '../run/run-key.js';
import { describeRun, runSerially } from '../run/session.js';
import { buildWorld, type DatasetLoader } from '../world/world.js';

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
  /** Run the pending runs on a Redis queue's workers (`msd eval-worker`) instead of here (src/eval/queue/coordinator.ts). */
  queue?: QueueOptions;
  /** Write the report of the runs already finished and run nothing (a long grid stopped midway); the report says what is missing. */
  reportOnly?: boolean;
}

export interface EvaluationResult {
  /** The runs of this config, in plan order (finished now or earlier). */
  records: RunRecord[];
  ran: number;
  skipped: number;
  /** Runs in the grid's plan. */
  planned: number;
  files: ReportFiles;
  registry: Registry;
  backend?: BackendInfo;
  /** With `queue`: the runs that failed on every try, with their logs (not in `records`). */
  failed?: FailedRun[];
}

async function defaultLoader(): Promise<DatasetLoader> {
  const { loadDataset } = await import('../world/datasets.js');
  return loadDataset as DatasetLoader;
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
  if (options.reportOnly && pending.length > 0) log(`report only: ${pending.length} of ${plan.length} runs not finished, left out of the report`);
  if (pending.length > 0 && !options.reportOnly) {
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
      failed = await (await import('../queue/coordinator.js')).runOnQueue({
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
    notes: [
      ...(backend ? [`tfjs backend: ${backend.name}`, ...(training ? [training] : [])] : []),
      // A partial report says so: a mean over fewer seeds, or a setting missing an attacker, must not pass for the whole grid.
      ...(options.reportOnly && pending.length > 0 ? [`partial: ${records.length} of ${plan.length} runs finished; ${pending.length} not run yet`] : []),
    ],
  });
  // On a queue, runs that failed or were left to the workers when the coordinator stopped are not "ran".
  const ran = options.reportOnly ? 0 : failed ? records.filter((r) => !skippedKeys.has(r.key)).length : pending.length;
  return { records, ran, skipped: plan.length - pending.length, planned: plan.length, files, registry, backend, ...(failed ? { failed } : {}) };
}
