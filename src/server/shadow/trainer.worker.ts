/**
 * The shadow's trainer thread (shadow.ts starts it; nothing else should). Each round, per tier: a
 * fresh knockoff trained on the sampled inputs with the defended answers, another on the same inputs
 * with the original answers, both from the same seeded weights and shuffling (a paired comparison);
 * each scored on the owner's held-out labels, and for agreement with the model's original top-1 on
 * the held-back rows (and on the held-out set when the model's answers there are known).
 *
 * Priority and budget: the thread lowers its own scheduling priority (nice 19 on Linux, where the
 * nice value is per thread; onnxruntime trains on this thread, one intra-op thread), and after every
 * stretch of work (about 200 ms: a progress report of the training loop, a scoring pass) it sleeps
 * busy × (1/cpu − 1), busy being the thread's own CPU time (Linux: /proc/thread-self), so that it
 * uses at most `cpu` of one core on average. Sleeping is
 * Atomics.wait on a shared cell the main thread can notify (on close), so a pause never holds a
 * shutdown.
 */
import { readFileSync } from 'node:fs';
import { setPriority, getPriority } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parentPort, threadId, workerData } from 'node:worker_threads';
import type { Pair, RoundGroup, TierFigures, TrainerReply, TrainerRequest, TrainerStart } from './protocol.js';
import { share } from './scores.js';

const port = parentPort;
if (!port) throw new Error('trainer.worker is the shadow attacker’s worker thread entry; turn the shadow on with the `shadow` option instead');

const start = workerData as TrainerStart;
const reply = (message: TrainerReply) => port.postMessage(message);

/**
 * This thread's CPU seconds (user + system) from /proc/thread-self/stat on Linux (clock ticks of
 * 1/100 s), undefined elsewhere: then the wall time of the work stands for it (an upper bound).
 */
function threadCpuSeconds(): number | undefined {
  try {
    const fields = readFileSync('/proc/thread-self/stat', 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

let busySeconds = 0;
let pausedSeconds = 0;
/** Worked seconds not yet reported to the main thread, and when they last were. */
let unreported = 0;
let reportedAt = performance.now();

function reportCpu(force = false): void {
  if (unreported <= 0 || (!force && performance.now() - reportedAt < 1000)) return;
  reply({ type: 'cpu', seconds: unreported });
  unreported = 0;
  reportedAt = performance.now();
}
let busySince = performance.now();
let cpuSince = threadCpuSeconds();

/**
 * Charges the work since the last call (the thread's CPU time where it can be read, else the wall
 * time) and sleeps so that the average stays within the budget.
 */
function pace(): void {
  const now = performance.now();
  const cpuNow = threadCpuSeconds();
  const busy = cpuNow !== undefined && cpuSince !== undefined ? cpuNow - cpuSince : (now - busySince) / 1000;
  busySeconds += busy;
  unreported += busy;
  reportCpu();
  if (start.cpu < 1 && Atomics.load(start.wake, 0) === 0) {
    const pauseMs = busy * (1 / start.cpu - 1) * 1000;
    if (pauseMs >= 1) Atomics.wait(start.wake, 0, 0, pauseMs);
  }
  busySince = performance.now();
  cpuSince = threadCpuSeconds();
  pausedSeconds += (busySince - now) / 1000;
}

function message(error: unknown): string {
  // Messages of the models layer name counts and shapes; decimals are masked all the same (no values leave).
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.replace(/-?\d*\.\d+(e[-+]?\d+)?/gi, '…');
}

type Models = typeof import('../../models/index.js');
type Knockoff = Awaited<ReturnType<Models['createModel']>>;

/** What every round needs: the models layer, the knockoffs' input shape, the held-out rows as they take them. */
interface Knockoffs {
  models: Models;
  /** One input's shape as the knockoff takes it (channels last for the convolutional ones). */
  inputShape: number[];
  /** Rows in channels-first order turned to channels-last, for the convolutional knockoffs (else as they are). */
  toChannelsLast(x: Float32Array, rows: number): Float32Array;
  heldOut: TrainerStart['heldOut'];
  /** A fresh knockoff: the built-in architecture from a seed, or the owner's model with seeded weights. */
  fresh(seed: number): Promise<Knockoff>;
}

function lowerPriority(): void {
  if (!start.lowPriority) return;
  try {
    setPriority(19);
  } catch {
    // Not allowed here (some containers): the budget still holds.
  }
}

function currentPriority(): number | undefined {
  try {
    return getPriority();
  } catch {
    return undefined;
  }
}

function knockoffsOf(models: Models): Knockoffs {
  const { tf } = models;
  const conv = start.arch === 'lenet' || start.arch === 'cnn';
  const channelsFirst = conv && start.layout === 'nchw' && start.inputShape.length === 3;
  const inputShape = channelsFirst ? [start.inputShape[1], start.inputShape[2], start.inputShape[0]] : [...start.inputShape];
  const toChannelsLast = (x: Float32Array, rows: number): Float32Array => {
    if (!channelsFirst) return x;
    const [c, h, w] = start.inputShape;
    return models.convertLayout(x, rows, h, w, c, 'nchw', 'nhwc');
  };
  const heldOut = { ...start.heldOut, x: toChannelsLast(start.heldOut.x, start.heldOut.rows) };
  const owner = start.arch !== 'auto' && start.arch !== 'mlp' && !conv ? start.arch : undefined;
  const fresh = async (seed: number): Promise<Knockoff> => {
    if (!owner)
      return models.createModel({ arch: start.arch === 'auto' ? 'mlp' : (start.arch as 'mlp' | 'lenet' | 'cnn'), inputShape, classes: start.classes, seed });
    const { model } = await models.loadTfjsModel(owner);
    if (!(model instanceof tf.LayersModel)) {
      model.dispose();
      throw new models.ModelError(`${owner} is a graph model; the shadow trains layers models only: give a layers model, or mlp/lenet/cnn`);
    }
    models.reinitWeights(model, seed);
    return model;
  };
  return { models, inputShape, toChannelsLast, heldOut, fresh };
}

/** Checked once at start: the network takes the inputs and answers the classes (a bad --shadow-arch fails here, not at every round). */
async function checkProbe({ models, inputShape, fresh }: Knockoffs): Promise<void> {
  const probe = await fresh(start.seed);
  try {
    const width = models.inputSize(probe);
    const classes = models.classCount(probe);
    const features = inputShape.reduce((a, b) => a * b, 1);
    if (width !== features || classes !== start.classes)
      throw new models.ModelError(
        `the knockoff takes ${width} values and answers ${classes} classes; the requests carry ${features} values and ${start.classes} classes`,
      );
  } finally {
    probe.dispose();
  }
}

/** Trains one fresh knockoff on the rows with the given answers, and scores it. */
async function trainAndScore(k: Knockoffs, group: RoundGroup, x: Float32Array, backX: Float32Array, answers: Float32Array, seed: number) {
  const { models, heldOut } = k;
  const model = await k.fresh(seed);
  try {
    await models.trainModel(
      model,
      { x, rows: group.rows, targets: answers },
      {
        epochs: start.epochs,
        batchSize: start.batchSize,
        learningRate: start.learningRate,
        seed: seed + 1,
        loss: 'soft-ce',
        engine: start.engine,
        threads: 1,
        progressIntervalMs: 200,
        onProgress: pace,
        log: () => {},
      },
    );
    pace();
    const predicted = models.predictClasses(model, heldOut.x, heldOut.rows);
    const back = group.back.rows > 0 ? models.predictClasses(model, backX, group.back.rows) : undefined;
    pace();
    return {
      accuracy: share(predicted, heldOut.labels),
      heldBack: back ? share(back, group.back.originalTop1) : undefined,
      heldOut: heldOut.answersTop1 ? share(predicted, heldOut.answersTop1) : undefined,
    };
  } finally {
    model.dispose();
  }
}

/** One tier's figures: a knockoff on the defended answers and one on the original answers, from the same seed. */
async function tierFigures(k: Knockoffs, group: RoundGroup, seed: number): Promise<TierFigures> {
  const x = k.toChannelsLast(group.x, group.rows);
  const backX = k.toChannelsLast(group.back.x, group.back.rows);
  const defended = await trainAndScore(k, group, x, backX, group.defended, seed);
  const original = await trainAndScore(k, group, x, backX, group.original, seed);
  const pair = (key: 'accuracy' | 'heldBack' | 'heldOut'): Pair | undefined =>
    defended[key] === undefined || original[key] === undefined ? undefined : { defended: defended[key]!, original: original[key]! };
  return { tier: group.tier, rows: group.rows, accuracy: pair('accuracy')!, heldBack: pair('heldBack'), heldOut: pair('heldOut') };
}

let round = 0;

async function runRound(k: Knockoffs, request: TrainerRequest): Promise<void> {
  round += 1;
  busySeconds = 0;
  pausedSeconds = 0;
  busySince = performance.now();
  cpuSince = threadCpuSeconds();
  const figures: TierFigures[] = [];
  try {
    for (const group of request.groups) {
      const seed = (start.seed * 1_000_003 + round * 7919) >>> 0;
      figures.push(await tierFigures(k, group, seed));
    }
    pace();
    reportCpu(true);
    reply({ type: 'result', id: request.id, figures, busySeconds, pausedSeconds });
  } catch (error) {
    pace();
    reportCpu(true);
    reply({ type: 'error', id: request.id, message: message(error), busySeconds });
  }
}

async function main(): Promise<void> {
  lowerPriority();
  const models = await import('../../models/index.js');
  await models.initBackend({ log: () => {} });
  const k = knockoffsOf(models);
  await checkProbe(k);
  const engine = start.engine === 'tfjs' ? `tfjs ${models.tf.getBackend()}` : await models.describeTrainingEngine();
  reply({ type: 'ready', engine, priority: currentPriority(), threadId });
  // The thread's start-up (TF.js, onnxruntime, the probe model) counts too.
  unreported += threadCpuSeconds() ?? 0;
  reportCpu(true);

  // Rounds one at a time, in order.
  let queue = Promise.resolve();
  port!.on('message', (request: TrainerRequest) => {
    if (request.type !== 'round') return;
    queue = queue.then(() => runRound(k, request));
  });
}

main().catch((error: unknown) => reply({ type: 'failed', message: message(error) }));
