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
import type { Logger } from 'pino';
import type { Defense, ProbBatch } from '../../defenses/index.js';
import type { ServingMetrics } from '../metrics.js';
import type { ContextProvider } from '../perturber.js';
import type { InputRows } from '../protocols/index.js';
import { createShadowMetrics, type ShadowMetrics } from './metrics.js';
import type { ResolvedShadow, ShadowArch } from './options.js';
import type { TierFigures } from './protocol.js';
import { seededRandom, type Random } from './random.js';
import { ShadowSamples } from './samples.js';
import { TrainerThread, type RoundReply } from './trainer-thread.js';
import { measureUtility } from './utility.js';

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

const round3 = (v: number) => Math.round(v * 1000) / 1000;

function describeArch(arch: ShadowArch): string {
  if (arch === 'auto') return 'an MLP for flat inputs, a small CNN (lenet) for images';
  if (arch === 'mlp' || arch === 'lenet' || arch === 'cnn') return arch;
  return `${arch} re-initialised`;
}

function describeEvery(every: ResolvedShadow['every']): string {
  return every.seconds !== undefined ? `every ${every.seconds} s` : `every ${every.samples} new sampled rows`;
}

/** What runs, in one line (for the start line). */
function describeShadow(options: ResolvedShadow): string {
  const { heldOut } = options;
  return (
    `shadow attacker: samples ${round3(options.sample * 100)}% of answered requests (at most ${options.capacity} rows a tier, ${round3(options.holdBack * 100)}% held back), ` +
    `trains knockoffs on the defended and on the original answers (${describeArch(options.arch)}; ${options.epochs} epochs) ${describeEvery(options.every)}, ` +
    `in a worker thread on ≤ ${round3(options.cpu * 100)}% of one core, scored on ${heldOut.rows} held-out rows${heldOut.source ? ` (${heldOut.source})` : ''}` +
    `${heldOut.answers ? ' with the model’s answers' : ''}${options.minProtection !== undefined ? `; alert under ${options.minProtection} protection` : ''}`
  );
}

/** Sets the gauges from a round's figures. */
function publish(metrics: ShadowMetrics, figures: readonly TierFigures[]): void {
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
}

/** A round's figures published (gauges, counters, one log line a tier), as runRound resolves with them. */
function roundDone(metrics: ShadowMetrics, logger: Logger | undefined, result: RoundReply, started: number, trainerThreadId: number): ShadowRoundResult {
  publish(metrics, result.figures);
  metrics.rounds.inc({ result: 'done' });
  metrics.lastRound.set(Date.now() / 1000);
  const wallSeconds = (performance.now() - started) / 1000;
  logRound(logger, result, wallSeconds);
  const { figures, busySeconds, pausedSeconds } = result;
  return { figures, busySeconds, pausedSeconds, wallSeconds, trainerThreadId };
}

/** One log line per tier of a finished round (figures rounded; no rows). */
function logRound(logger: Logger | undefined, result: RoundReply, wallSeconds: number): void {
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
}

/** Throws when a held-out label is not one of the model's classes. */
function checkLabels(labels: Int32Array, classes: number | undefined): void {
  if (classes === undefined) return;
  const bad = labels.findIndex((l) => l >= classes);
  if (bad >= 0) throw new Error(`held-out label ${labels[bad]} at row ${bad} is outside the model's ${classes} classes`);
}

export function createShadowAttacker(options: ResolvedShadow, deps: ShadowDeps): ShadowAttacker {
  const metrics: ShadowMetrics = createShadowMetrics(deps.metrics.registry, deps.metrics.prefix);
  if (options.minProtection !== undefined) metrics.minProtection().set(options.minProtection);
  const logger = deps.logger?.child({ component: 'shadow' });
  const tierLabels = new Set([DEFAULT_TIER, ...deps.tiers]);
  const random: Random = seededRandom(options.seed);
  const heldOut = options.heldOut;
  const samples = new ShadowSamples(options, tierLabels, random, metrics, logger, () => schedule());
  const trainer = new TrainerThread(options, { metrics, logger, imageLayout: deps.imageLayout, lowPriority: deps.lowPriority });
  let closed = false;
  let running: Promise<ShadowRoundResult | undefined> | undefined;
  let pending = false;
  let failuresInARow = 0;
  let utilityDone = false;

  const round = async (): Promise<ShadowRoundResult | undefined> => {
    const { groups, transfer } = samples.roundRows();
    if (groups.length === 0) return undefined;
    samples.rowsSinceRound = 0;
    const started = performance.now();
    try {
      checkLabels(heldOut.labels, samples.classes);
      if (!utilityDone && heldOut.answers) {
        utilityDone = true;
        void measureUtility(heldOut, heldOut.answers, { metrics, logger, tierLabels, defenses: deps.defenses, context: deps.context });
      }
      const result = await trainer.run(groups, transfer, { shape: samples.inputShape!, classes: samples.classes! });
      failuresInARow = 0;
      return roundDone(metrics, logger, result, started, trainer.threadId);
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
          if (samples.rowsSinceRound > 0) schedule();
        }, options.every.seconds * 1000)
      : undefined;
  timer?.unref();

  async function stop(): Promise<void> {
    closed = true;
    if (timer) clearInterval(timer);
    await trainer.stop();
  }

  return {
    summary: describeShadow(options),
    draw: () => !closed && random() < options.sample,
    offer: (answer) => {
      if (closed || !tierLabels.has(answer.tier)) return;
      samples.offer(answer);
    },
    runRound,
    held: () => samples.held(),
    close: stop,
  };
}
