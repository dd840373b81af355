/**
 * The serving side of the shadow's trainer thread (trainer.worker.ts): starts it when the first round
 * comes (again after it exited), sends it each round's rows and waits for its figures, counts the CPU
 * seconds it reports, and stops it (cutting a pause short) on close.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { ShadowMetrics } from './metrics.js';
import type { ResolvedShadow, ShadowArch } from './options.js';
import type { RoundGroup, TrainerReply, TrainerRequest, TrainerStart } from './protocol.js';
import { top1Of } from './scores.js';

export type RoundReply = Extract<TrainerReply, { type: 'result' }>;

/** What the knockoffs take and answer, as the first sampled rows showed it. */
export interface KnockoffInput {
  shape: number[];
  classes: number;
}

export interface TrainerThreadDeps {
  metrics: ShadowMetrics;
  logger?: Logger;
  /** The serving layer's image layout, when requests carry images. */
  imageLayout?: 'nhwc' | 'nchw';
  /** Lower the thread's priority (default true). */
  lowPriority?: boolean;
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

/** The knockoffs' network: the one asked for, or under 'auto' a small CNN for images of 12 × 12 or more, else an MLP. */
function archFor(arch: ShadowArch, shape: number[], imageLayout: 'nhwc' | 'nchw' | undefined): ShadowArch {
  if (arch !== 'auto') return arch;
  const image = shape.length === 3 && (shape.includes(1) || shape.includes(3));
  const [a, b] = imageLayout === 'nchw' ? [shape[1], shape[2]] : [shape[0], shape[1]];
  return image && a >= 12 && b >= 12 ? 'lenet' : 'mlp';
}

export class TrainerThread {
  /** Set to 1 and notified on stop: cuts the thread's pause short. */
  private readonly wake = new Int32Array(new SharedArrayBuffer(4));
  private worker: Worker | undefined;
  private ready: Promise<void> | undefined;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (r: RoundReply) => void; reject: (e: Error) => void }>();
  /** The worker thread's id once it is ready (never the serving thread's 0). */
  threadId = -1;

  constructor(
    private readonly options: ResolvedShadow,
    private readonly deps: TrainerThreadDeps,
  ) {}

  /** Trains on one round's rows (their buffers moved to the thread) and resolves with its figures; starts the thread first if needed. */
  async run(groups: RoundGroup[], transfer: ArrayBuffer[], input: KnockoffInput): Promise<RoundReply> {
    this.ready ??= this.start(input);
    await this.ready;
    const id = this.nextId++;
    return new Promise<RoundReply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      const request: TrainerRequest = { type: 'round', id, groups };
      this.worker!.postMessage(request, transfer);
    });
  }

  /** Cuts a pause short and ends the thread. */
  async stop(): Promise<void> {
    Atomics.store(this.wake, 0, 1);
    Atomics.notify(this.wake, 0);
    const thread = this.worker;
    this.worker = undefined;
    if (thread) await thread.terminate();
  }

  private startMessage(input: KnockoffInput, arch: ShadowArch): TrainerStart {
    const { options, deps } = this;
    const { heldOut } = options;
    const layout = input.shape.length === 3 ? (deps.imageLayout ?? 'nhwc') : undefined;
    const answersTop1 = heldOut.answers ? top1Of(heldOut.answers, heldOut.rows, heldOut.answers.length / heldOut.rows) : undefined;
    return {
      arch,
      inputShape: input.shape,
      layout,
      classes: input.classes,
      epochs: options.epochs,
      batchSize: options.batchSize,
      learningRate: options.learningRate,
      seed: options.seed,
      cpu: options.cpu,
      engine: options.engine,
      heldOut: { x: heldOut.x, rows: heldOut.rows, labels: heldOut.labels, answersTop1 },
      wake: this.wake,
      lowPriority: deps.lowPriority ?? true,
    };
  }

  /** Starts the thread; resolves once it is ready, rejects when it fails to start or exits first. */
  private start(input: KnockoffInput): Promise<void> {
    const shape = input.shape;
    const arch = archFor(this.options.arch, shape, this.deps.imageLayout);
    const start = this.startMessage(input, arch);
    const { script, eval: isEval } = workerScript();
    const thread = new Worker(script, { eval: isEval, workerData: start, stdout: false, stderr: false });
    thread.unref();
    this.worker = thread;
    return new Promise<void>((resolve, reject) => {
      thread.on('message', (message: TrainerReply) => {
        if (message.type === 'ready') {
          this.threadId = message.threadId;
          this.deps.logger?.info({ engine: message.engine, arch, inputShape: shape, priority: message.priority }, 'shadow: trainer thread ready');
          resolve();
        } else if (message.type === 'failed') {
          reject(new Error(message.message));
          void thread.terminate();
        } else this.onReply(message);
      });
      thread.on('error', (error) => reject(error));
      thread.on('exit', (code) => {
        if (this.worker === thread) {
          this.worker = undefined;
          this.ready = undefined;
        }
        const gone = new Error(`the shadow's trainer thread exited (code ${code})`);
        reject(gone);
        for (const entry of this.waiting.values()) entry.reject(gone);
        this.waiting.clear();
      });
    });
  }

  /** A reply of a ready thread: CPU seconds worked, or the outcome of a round. */
  private onReply(message: Exclude<TrainerReply, { type: 'ready' | 'failed' }>): void {
    if (message.type === 'cpu') {
      this.deps.metrics.trainSeconds.inc(message.seconds);
    } else if (message.type === 'result') {
      this.waiting.get(message.id)?.resolve(message);
      this.waiting.delete(message.id);
    } else if (message.type === 'error') {
      this.waiting.get(message.id)?.reject(new Error(message.message));
      this.waiting.delete(message.id);
    }
  }
}
