/**
 * `--jobs N`: the pending runs spread over N child processes, each with its own tfjs backend (wasm
 * computes on one thread, so processes are how an evaluation uses the cores). The parent loads the
 * data once, trains or loads the victim (and the misinformation model) so the cache holds them,
 * sends the world to each child, then hands out work units (one defense setting and attacker seed)
 * as children become free. Children send finished records back; only the parent writes the store.
 * Every run's seeds depend on the run alone, so the records equal those of a serial evaluation.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseDefense } from '../../defenses/index.js';
import type { EvalConfig } from '../config.js';
import type { ProgressFactory } from '../progress.js';
import type { RunRecord } from '../records/run-record.js';
import type { RunSpec } from './run-key.js';
import { prepareMisinformationModel, prepareVictim } from '../world/victim.js';
import type { EvaluationWorld } from '../world/world.js';

/** A run as it travels to a child: the setting by its spec. */
export interface RunRef {
  spec: string;
  policy: RunSpec['policy'];
  budget: number;
  attackerSeed: number;
}

export type ParentMessage =
  | { type: 'init'; config: EvalConfig; world: EvaluationWorld; cacheDir: string }
  | { type: 'unit'; runs: RunRef[] }
  | { type: 'exit' };
export type ChildMessage = { type: 'ready' } | { type: 'record'; record: RunRecord } | { type: 'idle' } | { type: 'error'; message: string };

export interface ParallelOptions {
  config: EvalConfig;
  world: EvaluationWorld;
  pending: readonly RunSpec[];
  jobs: number;
  cacheDir: string;
  progress: ProgressFactory;
  log: (line: string) => void;
  onRecord: (record: RunRecord) => Promise<void>;
}

/** Units of work: the runs of one defense setting and attacker seed (they share one endpoint). */
export function workUnits(pending: readonly RunSpec[]): RunRef[][] {
  const units = new Map<string, RunRef[]>();
  for (const run of pending) {
    const key = `${run.defense.spec}\u0000${run.attackerSeed}`;
    units.set(key, [...(units.get(key) ?? []), { spec: run.defense.spec, policy: run.policy, budget: run.budget, attackerSeed: run.attackerSeed }]);
  }
  return [...units.values()];
}

/** Typed arrays copied to their own buffers: a view of a large dataset would otherwise send all of it. */
function compact<T>(value: T): T {
  if (ArrayBuffer.isView(value)) return (value as unknown as Float32Array).slice() as unknown as T;
  if (Array.isArray(value)) return value.map(compact) as unknown as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, compact(v)])) as T;
  return value;
}

/** What a child gets first: the grid (defenses by spec) and the world, compacted. Also sent by the queue's workers (queue/). */
export function initMessage(config: EvalConfig, world: EvaluationWorld, cacheDir: string): ParentMessage {
  return { type: 'init', config: { ...config, defenses: config.defenses.map(({ defense: _defense, ...rest }) => rest) }, world: compact(world), cacheDir };
}

/**
 * The child's entry and loader. Under tsx (this file is .ts) the child imports tsx by its absolute
 * URL: a bare `--import tsx` resolves from the working directory, which fails wherever the user
 * stands outside this package. The parent's own tsx flags (bare or not) are replaced by that one.
 */
export function workerScript(): { file: string; execArgv: string[] } {
  const typescript = import.meta.url.endsWith('.ts');
  const file = fileURLToPath(new URL(`./worker.${typescript ? 'ts' : 'js'}`, import.meta.url));
  const execArgv: string[] = [];
  const inherited = process.execArgv;
  for (let i = 0; i < inherited.length; i++) {
    const arg = inherited[i];
    if (arg.startsWith('--test')) continue;
    if ((arg === '--import' || arg === '--loader') && /tsx/.test(inherited[i + 1] ?? '')) {
      i++;
      continue;
    }
    if (/^--(import|loader)=.*tsx/.test(arg)) continue;
    execArgv.push(arg);
  }
  if (typescript) execArgv.push('--import', import.meta.resolve('tsx'));
  return { file, execArgv };
}

export async function runInParallel(options: ParallelOptions): Promise<void> {
  const { config, world, cacheDir, progress, log } = options;
  // Fill the cache first, so children load the models instead of each training them.
  const victim = await prepareVictim(config, world, cacheDir, progress);
  log(`victim: ${victim.fromCache ? 'loaded from' : 'trained and saved to'} ${victim.dir}`);
  victim.model.dispose();
  if (config.defenses.some((d) => parseDefense(d.spec).needs.includes('misinformation'))) {
    const misinformation = await prepareMisinformationModel(config, world, cacheDir, progress);
    misinformation.model.dispose();
  }
  const units = workUnits(options.pending);
  const jobs = Math.min(options.jobs, units.length);
  log(`${options.pending.length} runs in ${units.length} units over ${jobs} processes`);
  const init = initMessage(config, world, cacheDir);
  const { file, execArgv } = workerScript();
  const children: ChildProcess[] = [];
  let next = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      let running = jobs;
      let failed = false;
      let chain = Promise.resolve();
      const fail = (error: Error) => {
        if (failed) return;
        failed = true;
        reject(error);
      };
      for (let i = 0; i < jobs; i++) {
        const child = fork(file, [], { execArgv, env: trainingEnv(), serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        children.push(child);
        const handOut = () => {
          if (failed) return;
          if (next < units.length) child.send({ type: 'unit', runs: units[next++] } satisfies ParentMessage);
          else {
            child.send({ type: 'exit' } satisfies ParentMessage);
            running -= 1;
            if (running === 0) chain.then(resolve, fail);
          }
        };
        child.on('message', (message: ChildMessage) => {
          if (message.type === 'ready' || message.type === 'idle') handOut();
          else if (message.type === 'record') chain = chain.then(() => options.onRecord(message.record)).catch((error: Error) => fail(error));
          else if (message.type === 'error') fail(new Error(`evaluation worker ${i + 1}: ${message.message}`));
        });
        child.on('exit', (code, signal) => {
          if (code !== 0) fail(new Error(`evaluation worker ${i + 1} exited with ${signal ?? `code ${code}`}`));
        });
        child.on('error', fail);
        child.send(init);
      }
    });
  } finally {
    // SIGKILL: a child leaves SIGINT and SIGTERM to its parent (worker.ts).
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

/**
 * A child's environment: one training thread per job, whatever --jobs and the machine, unless the user
 * set MSD_TRAIN_THREADS. onnxruntime's results change with its thread count, so a count taken from the
 * cores would make a run's record depend on where it ran (another machine, a queue worker, a busier
 * moment); the evaluation's parallelism is its jobs.
 */
export function trainingEnv(): NodeJS.ProcessEnv {
  return { ...process.env, MSD_TRAIN_THREADS: process.env.MSD_TRAIN_THREADS || '1' };
}
