/**
 * The shadow attacker: what a thief learns from the answers actually served, as live gauges.
 *
 * After an answer has gone out (the response's 'finish'), the serving layer offers it here: a share
 * of the requests is drawn, and each of their rows (the model input as the surrogate sees it, the
 * model's original probabilities, the defended ones the client got) goes to its tier's reservoir:
 * a bounded uniform sample (reservoir.ts), with a share held back from training. Nothing of it is
 * logged or written anywhere: the rows live in this process's memory and in the trainer thread's.
 *
 * Every `every` (seconds, or new sampled rows), a round: the reservoirs are copied and moved to a
 * worker thread (trainer.worker.ts) that trains, at a low priority and within a CPU budget, two
 * knockoffs per tier on the same inputs, one on the defended answers and one on the original ones,
 * and scores them on the owner's labelled held-out set. The gauges (metrics.ts) are set from the
 * figures it sends back. No answer waits on any of it: the offer runs after the answer was sent,
 * copies a few rows, and returns; training never runs on the serving thread.
 */
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { Defense, ProbBatch } from '../../defenses/index.js';
import type { ServingMetrics } from '../metrics.js';
import type { ContextProvider } from '../perturber.js';
import type { InputRows } from '../protocols/index.js';
import { createShadowMetrics, type ShadowMetrics } from './metrics.js';
import type { ResolvedShadow, ShadowArch } from './options.js';
import type { RoundGroup, TierFigures, TrainerReply, TrainerRequest, TrainerStart } from './protocol.js';
import { seededRandom, type Random } from './random.js';
import { Reservoir } from './reservoir.js';

/** The tier label of the default defense. */
export const DEFAULT_TIER = 'default';

/** One answered request, as the serving layer offers it once the answer has gone out. */
export interface ShadowAnswer {
  /** The tier whose defense answered: "default" or a configured tier name. */
  tier: string;
  /** The model's original probabilities. */
  original: ProbBatch;
  /** The probabilities the client got. */
  defended: ProbBatch;
  /** The request's inputs as the surrogate sees them, or how to read them (a promise for images). */
  inputs: InputRows | (() => InputRows | Promise<InputRows>);
}

export interface ShadowRoundResult {
  figures: TierFigures[];
  /** Seconds the trainer thread worked (its CPU time at most), and paused to keep the budget. */
  busySeconds: number;
  pausedSeconds: number;
  wallSeconds: number;
  /** The worker thread that trained (never the serving thread's id 0). */
  trainerThreadId: number;
}

export interface ShadowAttacker {
  /** What runs, in one line (for the start line). */
  readonly summary: string;
  /** Whether this request is sampled: drawn once per answered request, before anything is kept for it. */
  draw(): boolean;
  /** Takes the rows of a drawn request; never throws, never waits. Call it after the answer was sent. */
  offer(answer: ShadowAnswer): void;
  /** Runs a round now (whatever the schedule) and resolves with its figures; undefined when no tier has enough rows. */
  runRound(): Promise<ShadowRoundResult | undefined>;
  /** Rows held per tier (training part, held-back part). */
  held(): Record<string, { train: number; back: number }>;
  /** Stops the schedule and the trainer thread. */
  close(): Promise<void>;
}

export interface ShadowDeps {
  metrics: ServingMetrics;
  logger?: Logger;
  /** Tier names besides "default": the label's only other values. */
  tiers: readonly string[];
  /** The defense of each tier, to measure the defended accuracy on the held-out set (needs its answers there). */
  defenses?: ReadonlyMap<string, Defense>;
  context?: ContextProvider;
  /** The serving layer's image layout, when requests carry images. */
  imageLayout?: 'nhwc' | 'nchw';
  /** Test hook: lower the trainer thread's priority (default true). */
  lowPriority?: boolean;
}

/** The tier label of the defense that answered: "default", a configured tier's name, or undefined (skip). */
export function tierOf(defense: Defense, defaultDefense: Defense, tiers: ReadonlyMap<string, Defense>): string | undefined {
  if (defense === defaultDefense) return DEFAULT_TIER;
  for (const [name, tier] of tiers) if (tier === defense) return name;
  return undefined;
}

/**
 * The worker entry and how to start it: the compiled .js beside this file, or under tsx (this file is
 * .ts) a tiny eval'd loader that registers tsx in the worker first, as the threaded surrogate does.
 */
function workerScript(): { script: string | URL; eval: boolean } {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return { script: new URL('./trainer.worker.js', here), eval: false };
  const entry = new URL('./trainer.worker.ts', here).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  return { script: `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`, eval: true };
}

interface TierStore {
  train: Reservoir;
  back: Reservoir;
}

const round3 = (v: number) => Math.round(v * 1000) / 1000;

function top1Of(data: Float32Array, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (data[r * cols + c] > data[r * cols + best]) best = c;
    out[r] = best;
  }
  return out;
}

function describeArch(arch: ShadowArch): string {
  if (arch === 'auto') return 'an MLP for flat inputs, a small CNN (lenet) for images';
  if (arch === 'mlp' || arch === 'lenet' || arch === 'cnn') return arch;
  return `${arch} re-initialised`;
}

function describeEvery(every: ResolvedShadow['every']): string {
  return every.seconds !== undefined ? `every ${every.seconds} s` : `every ${every.samples} new sampled rows`;
}

export function createShadowAttacker(options: ResolvedShadow, deps: ShadowDeps): ShadowAttacker {
  const metrics: ShadowMetrics = createShadowMetrics(deps.metrics.registry, deps.metrics.prefix);
  if (options.minProtection !== undefined) metrics.minProtection().set(options.minProtection);
  const logger = deps.logger?.child({ component: 'shadow' });
  const tierLabels = new Set([DEFAULT_TIER, ...deps.tiers]);
  const random: Random = seededRandom(options.seed);
  const heldOut = options.heldOut;
  const backShare = options.holdBack;
  const stores = new Map<string, TierStore>();
  let classes: number | undefined;
  let inputShape: number[] | undefined;
  let rowsSinceRound = 0;
  let closed = false;
  let running: Promise<ShadowRoundResult | undefined> | undefined;
  let pending = false;
  let warnedRange = false;
  let warnedShape = false;
  let warnedCapacity = false;
  const heldOutMax = heldOut.x.reduce((m, v) => Math.max(m, v), Number.NEGATIVE_INFINITY);

  const summary =
    `shadow attacker: samples ${round3(options.sample * 100)}% of answered requests (at most ${options.capacity} rows a tier, ${round3(backShare * 100)}% held back), ` +
    `trains knockoffs on the defended and on the original answers (${describeArch(options.arch)}; ${options.epochs} epochs) ${describeEvery(options.every)}, ` +
    `in a worker thread on ≤ ${round3(options.cpu * 100)}% of one core, scored on ${heldOut.rows} held-out rows${heldOut.source ? ` (${heldOut.source})` : ''}` +
    `${heldOut.answers ? ' with the model’s answers' : ''}${options.minProtection !== undefined ? `; alert under ${options.minProtection} protection` : ''}`;

  /** Reservoirs of a tier, sized when its first row comes (the capacity lowered to fit the memory cap). */
  const storeFor = (tier: string, features: number, cols: number): TierStore => {
    let store = stores.get(tier);
    if (store) return store;
    const rowBytes = (features + 2 * cols) * 4;
    const budgetRows = Math.floor((options.maxMemoryMb * 1024 * 1024) / (tierLabels.size * rowBytes * (1 + backShare / (1 - backShare))));
    const capacity = Math.max(10, Math.min(options.capacity, budgetRows));
    if (capacity < options.capacity && !warnedCapacity) {
      warnedCapacity = true;
      logger?.warn({ capacity, asked: options.capacity, maxMemoryMb: options.maxMemoryMb }, 'shadow: reservoir capacity lowered to fit the memory cap');
    }
    const backCapacity = Math.max(1, Math.ceil((capacity * backShare) / (1 - backShare)));
    store = { train: new Reservoir(capacity, features, cols, random), back: new Reservoir(backCapacity, features, cols, random) };
    stores.set(tier, store);
    return store;
  };

  const take = (answer: ShadowAnswer, inputs: InputRows): void => {
    const { original, defended, tier } = answer;
    if (inputs.rows !== original.rows || defended.rows !== original.rows || defended.cols !== original.cols) {
      metrics.skippedRows.inc({ reason: 'shape' }, original.rows);
      return;
    }
    if (inputs.cols !== heldOut.features || (classes !== undefined && original.cols !== classes)) {
      metrics.skippedRows.inc({ reason: 'shape' }, inputs.rows);
      if (!warnedShape) {
        warnedShape = true;
        logger?.warn(
          { features: inputs.cols, heldOutFeatures: heldOut.features, classes: original.cols },
          'shadow: sampled rows unlike the held-out rows are skipped',
        );
      }
      return;
    }
    classes ??= original.cols;
    if (!inputShape) {
      const shape = inputs.shape && inputs.shape.reduce((a, b) => a * b, 1) === inputs.cols ? [...inputs.shape] : [inputs.cols];
      inputShape = options.inputShape ? [...options.inputShape] : shape;
    }
    const store = storeFor(tier, inputs.cols, original.cols);
    for (let r = 0; r < inputs.rows; r++) {
      if (!warnedRange && heldOutMax <= 1.0001) {
        const row = inputs.data.subarray(r * inputs.cols, (r + 1) * inputs.cols);
        if (row.some((v) => v > 1.5)) {
          warnedRange = true;
          logger?.warn(
            'shadow: sampled inputs go past 1 while the held-out rows lie in 0..1; scale the requests’ inputs (--input-scale, --image-scale) as the held-out rows are',
          );
        }
      }
      (random() < backShare ? store.back : store.train).offer(inputs.data, original.data, defended.data, r);
    }
    metrics.sampledRows.inc({ tier }, inputs.rows);
    metrics.reservoirRows.set({ tier }, store.train.size + store.back.size);
    rowsSinceRound += inputs.rows;
    if (options.every.samples !== undefined && rowsSinceRound >= options.every.samples) schedule();
  };

  const offer = (answer: ShadowAnswer): void => {
    if (closed || !tierLabels.has(answer.tier)) return;
    let inputs: InputRows | Promise<InputRows>;
    try {
      inputs = typeof answer.inputs === 'function' ? answer.inputs() : answer.inputs;
    } catch {
      metrics.skippedRows.inc({ reason: 'unreadable' }, answer.original.rows);
      return;
    }
    if (inputs instanceof Promise) {
      inputs.then(
        (read) => keep(answer, read),
        () => metrics.skippedRows.inc({ reason: 'unreadable' }, answer.original.rows),
      );
      return;
    }
    keep(answer, inputs);
  };

  /** take(), whose failure (a bug) is logged without the row and never reaches the serving path. */
  const keep = (answer: ShadowAnswer, inputs: InputRows): void => {
    try {
      take(answer, inputs);
    } catch (error) {
      logger?.warn({ error: (error as Error).name }, 'shadow: a sampled answer could not be kept');
    }
  };

  // ---- the trainer thread ----
  let worker: Worker | undefined;
  let ready: Promise<void> | undefined;
  const wake = new Int32Array(new SharedArrayBuffer(4));
  let nextId = 1;
  const waiting = new Map<number, { resolve: (r: Extract<TrainerReply, { type: 'result' }>) => void; reject: (e: Error) => void }>();
  let failuresInARow = 0;
  let trainerThreadId = -1;

  const archFor = (shape: number[]): ShadowArch => {
    if (options.arch !== 'auto') return options.arch;
    const image = shape.length === 3 && (shape.includes(1) || shape.includes(3));
    const [a, b] = deps.imageLayout === 'nchw' ? [shape[1], shape[2]] : [shape[0], shape[1]];
    return image && a >= 12 && b >= 12 ? 'lenet' : 'mlp';
  };

  const startWorker = (): Promise<void> => {
    const shape = inputShape!;
    const arch = archFor(shape);
    const layout = shape.length === 3 ? (deps.imageLayout ?? 'nhwc') : undefined;
    const answersTop1 = heldOut.answers ? top1Of(heldOut.answers, heldOut.rows, heldOut.answers.length / heldOut.rows) : undefined;
    const start: TrainerStart = {
      arch,
      inputShape: shape,
      layout,
      classes: classes!,
      epochs: options.epochs,
      batchSize: options.batchSize,
      learningRate: options.learningRate,
      seed: options.seed,
      cpu: options.cpu,
      engine: options.engine,
      heldOut: { x: heldOut.x, rows: heldOut.rows, labels: heldOut.labels, answersTop1 },
      wake,
      lowPriority: deps.lowPriority ?? true,
    };
    const { script, eval: isEval } = workerScript();
    const thread = new Worker(script, { eval: isEval, workerData: start, stdout: false, stderr: false });
    thread.unref();
    worker = thread;
    return new Promise<void>((resolve, reject) => {
      thread.on('message', (message: TrainerReply) => {
        if (message.type === 'ready') {
          trainerThreadId = message.threadId;
          logger?.info({ engine: message.engine, arch, inputShape: shape, priority: message.priority }, 'shadow: trainer thread ready');
          resolve();
        } else if (message.type === 'failed') {
          reject(new Error(message.message));
          void thread.terminate();
        } else if (message.type === 'cpu') {
          metrics.trainSeconds.inc(message.seconds);
        } else if (message.type === 'result') {
          waiting.get(message.id)?.resolve(message);
          waiting.delete(message.id);
        } else if (message.type === 'error') {
          waiting.get(message.id)?.reject(new Error(message.message));
          waiting.delete(message.id);
        }
      });
      thread.on('error', (error) => reject(error));
      thread.on('exit', (code) => {
        if (worker === thread) {
          worker = undefined;
          ready = undefined;
        }
        const gone = new Error(`the shadow's trainer thread exited (code ${code})`);
        reject(gone);
        for (const entry of waiting.values()) entry.reject(gone);
        waiting.clear();
      });
    });
  };

  // ---- utility on the held-out set: the defended answers' accuracy per tier (needs the model's answers there) ----
  let utilityDone = false;
  const measureUtility = async (): Promise<void> => {
    if (utilityDone || !heldOut.answers) return;
    utilityDone = true;
    const cols = heldOut.answers.length / heldOut.rows;
    metrics.modelAccuracy().set(share(top1Of(heldOut.answers, heldOut.rows, cols), heldOut.labels));
    for (const [tier, defense] of deps.defenses ?? []) {
      if (!tierLabels.has(tier)) continue;
      try {
        const chunk = 256;
        let right = 0;
        for (let start = 0; start < heldOut.rows; start += chunk) {
          const rows = Math.min(chunk, heldOut.rows - start);
          const batch: ProbBatch = { rows, cols, data: heldOut.answers.subarray(start * cols, (start + rows) * cols) };
          const inputs: InputRows = { rows, cols: heldOut.features, data: heldOut.x.subarray(start * heldOut.features, (start + rows) * heldOut.features) };
          const context = defense.needs.length > 0 && deps.context ? await deps.context(defense.needs, inputs) : {};
          const defended = defense.apply(batch, context);
          const top = top1Of(defended.data, rows, cols);
          for (let r = 0; r < rows; r++) if (top[r] === heldOut.labels[start + r]) right++;
          // One chunk at a time: live requests share the surrogate.
          await new Promise((resolve) => setImmediate(resolve));
        }
        metrics.defendedAccuracy.set({ tier }, right / heldOut.rows);
      } catch (error) {
        logger?.warn({ tier, error: (error as Error).message }, 'shadow: the defended accuracy on the held-out set could not be measured');
      }
    }
  };

  const publish = (figures: readonly TierFigures[]): void => {
    for (const f of figures) {
      metrics.accuracy.set({ answers: 'defended', tier: f.tier }, f.accuracy.defended);
      metrics.accuracy.set({ answers: 'original', tier: f.tier }, f.accuracy.original);
      metrics.protection.set({ tier: f.tier }, f.accuracy.original - f.accuracy.defended);
      metrics.trainingRows.set({ tier: f.tier }, f.rows);
      for (const [on, pair] of [
        ['held_back', f.heldBack],
        ['held_out', f.heldOut],
      ] as const) {
        if (!pair) continue;
        metrics.agreement.set({ answers: 'defended', tier: f.tier, on }, pair.defended);
        metrics.agreement.set({ answers: 'original', tier: f.tier, on }, pair.original);
      }
    }
  };

  const round = async (): Promise<ShadowRoundResult | undefined> => {
    const groups: RoundGroup[] = [];
    const transfer: ArrayBuffer[] = [];
    for (const [tier, store] of stores) {
      if (store.train.size < options.minSamples) continue;
      const train = store.train.snapshot();
      const back = store.back.snapshot();
      const backTop1 = top1Of(back.original, back.rows, store.back.classes);
      groups.push({
        tier,
        rows: train.rows,
        x: train.x,
        original: train.original,
        defended: train.defended,
        back: { rows: back.rows, x: back.x, originalTop1: backTop1 },
      });
      transfer.push(
        train.x.buffer as ArrayBuffer,
        train.original.buffer as ArrayBuffer,
        train.defended.buffer as ArrayBuffer,
        back.x.buffer as ArrayBuffer,
        backTop1.buffer as ArrayBuffer,
      );
    }
    if (groups.length === 0) return undefined;
    rowsSinceRound = 0;
    const started = performance.now();
    try {
      if (classes !== undefined) {
        const bad = heldOut.labels.findIndex((l) => l >= classes!);
        if (bad >= 0) throw new Error(`held-out label ${heldOut.labels[bad]} at row ${bad} is outside the model's ${classes} classes`);
      }
      void measureUtility();
      ready ??= startWorker();
      await ready;
      const id = nextId++;
      const result = await new Promise<Extract<TrainerReply, { type: 'result' }>>((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        const request: TrainerRequest = { type: 'round', id, groups };
        worker!.postMessage(request, transfer);
      });
      failuresInARow = 0;
      publish(result.figures);
      metrics.rounds.inc({ result: 'done' });
      metrics.lastRound.set(Date.now() / 1000);
      const wallSeconds = (performance.now() - started) / 1000;
      for (const f of result.figures) {
        logger?.info(
          {
            tier: f.tier,
            rows: f.rows,
            accuracyDefended: round3(f.accuracy.defended),
            accuracyOriginal: round3(f.accuracy.original),
            protection: round3(f.accuracy.original - f.accuracy.defended),
            agreementDefended: f.heldBack && round3(f.heldBack.defended),
            agreementOriginal: f.heldBack && round3(f.heldBack.original),
            busySeconds: round3(result.busySeconds),
            wallSeconds: round3(wallSeconds),
          },
          'shadow round',
        );
      }
      return { figures: result.figures, busySeconds: result.busySeconds, pausedSeconds: result.pausedSeconds, wallSeconds, trainerThreadId };
    } catch (error) {
      metrics.rounds.inc({ result: 'failed' });
      failuresInARow += 1;
      logger?.error({ error: (error as Error).message, failuresInARow }, 'shadow round failed');
      if (failuresInARow >= 3) {
        logger?.error('shadow: three rounds failed in a row; the shadow attacker stops (the serving goes on)');
        await stop();
      }
      throw error;
    }
  };

  const runRound = (): Promise<ShadowRoundResult | undefined> => {
    if (closed) return Promise.resolve(undefined);
    const next = (running ?? Promise.resolve(undefined)).catch(() => undefined).then(() => round());
    const tracked = next.finally(() => {
      if (running === tracked) running = undefined;
    });
    running = tracked;
    return tracked;
  };

  /** A round when due: never two at once, at most one waiting. */
  function schedule(): void {
    if (closed || pending) return;
    pending = true;
    setImmediate(() => {
      const after = running ?? Promise.resolve(undefined);
      after
        .catch(() => undefined)
        .then(() => {
          pending = false;
          return closed ? undefined : runRound();
        })
        .catch(() => {
          // Counted and logged in round().
        });
    });
  }

  const timer =
    options.every.seconds !== undefined
      ? setInterval(() => {
          if (rowsSinceRound > 0) schedule();
        }, options.every.seconds * 1000)
      : undefined;
  timer?.unref();

  async function stop(): Promise<void> {
    closed = true;
    if (timer) clearInterval(timer);
    Atomics.store(wake, 0, 1);
    Atomics.notify(wake, 0);
    const thread = worker;
    worker = undefined;
    if (thread) await thread.terminate();
  }

  return {
    summary,
    draw: () => !closed && random() < options.sample,
    offer,
    runRound,
    held: () => Object.fromEntries([...stores].map(([tier, s]) => [tier, { train: s.train.size, back: s.back.size }])),
    close: stop,
  };
}

function share(predicted: Int32Array, truth: ArrayLike<number>): number {
  let same = 0;
  for (let i = 0; i < predicted.length; i++) if (predicted[i] === truth[i]) same++;
  return predicted.length ? same / predicted.length : 0;
}
