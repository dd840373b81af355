/**
 * The `--jobs` children of a queue worker: the same child processes (eval/run/worker.ts), the same init
 * message and the same work units as a local `msd eval --jobs N`, handed out one run at a time as
 * the queue hands runs to this machine. A child that dies fails its run only; the next run gets a
 * fresh child. Each child's stderr is passed through and also told to the run it is working on (the
 * queue keeps it as the run's log).
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { EvalConfig } from '../config.js';
import { initMessage, trainingEnv, workerScript, type ChildMessage, type ParentMessage, type RunRef } from '../run/parallel.js';
import type { RunRecord } from '../records/run-record.js';
import type { EvaluationWorld } from '../world/world.js';

interface Slot {
  child: ChildProcess;
  ready: Promise<void>;
  busy: boolean;
  started?: boolean;
  /** The run in progress: where its records, its end and its log lines go. */
  current?: { records: RunRecord[]; resolve(records: RunRecord[]): void; reject(error: Error): void; onLine(line: string): void };
}

export interface ChildPoolOptions {
  config: EvalConfig;
  world: EvaluationWorld;
  cacheDir: string;
  jobs: number;
  /** Where the children's stderr goes besides the run's log (default: this process's stderr). */
  stderr?: (text: string) => void;
}

export class ChildPool {
  private readonly slots: Slot[] = [];
  private readonly init: ParentMessage;
  private closed = false;
  /** Children in a row that died before they were ready: past 3, none is started again. */
  private failedStarts = 0;
  private broken?: Error;

  constructor(private readonly options: ChildPoolOptions) {
    this.init = initMessage(options.config, options.world, options.cacheDir);
  }

  /** Starts every child and waits until each has loaded the victim. */
  async start(): Promise<void> {
    for (let i = 0; i < this.options.jobs; i++) this.slots.push(this.spawn());
    await Promise.all(this.slots.map((s) => s.ready));
  }

  /** Set once children keep dying before they are ready: the pool takes no more runs. */
  get failure(): Error | undefined {
    return this.broken;
  }

  /** The pids of the live children (tests, the heartbeat). */
  pids(): number[] {
    return this.slots.map((s) => s.child.pid).filter((p): p is number => p !== undefined);
  }

  private spawn(): Slot {
    const { file, execArgv } = workerScript();
    // As a local --jobs run: one training thread per job, so a record does not depend on the machine.
    const child = fork(file, [], { execArgv, env: trainingEnv(), serialization: 'advanced', stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    const slot: Slot = { child, busy: false, ready: Promise.resolve() };
    let pending = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      (this.options.stderr ?? ((t) => process.stderr.write(t)))(text);
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) if (line.trim()) slot.current?.onLine(line);
    });
    let readyResolve!: () => void;
    let readyReject!: (error: Error) => void;
    slot.ready = new Promise<void>((resolve, reject) => {
      readyResolve = resolve;
      readyReject = reject;
    });
    slot.ready.catch(() => {});
    let lastError = '';
    child.on('message', (message: ChildMessage) => {
      if (message.type === 'ready') {
        this.failedStarts = 0;
        slot.started = true;
        readyResolve();
      } else if (message.type === 'record') slot.current?.records.push(message.record);
      else if (message.type === 'idle') {
        const current = slot.current;
        slot.current = undefined;
        slot.busy = false;
        current?.resolve(current.records);
      } else if (message.type === 'error') lastError = message.message;
    });
    const gone = (why: string) => {
      const error = new Error(lastError ? `evaluation child ${child.pid}: ${lastError}` : `evaluation child ${child.pid} ${why}`);
      readyReject(error);
      const current = slot.current;
      slot.current = undefined;
      current?.reject(error);
      if (!slot.started && ++this.failedStarts >= 3) this.broken = new Error(`evaluation children keep failing to start; the last one: ${error.message}`);
      const index = this.slots.indexOf(slot);
      // Replaced at once (it loads the victim while the next run is being fetched), unless closing.
      if (index >= 0 && !this.closed && !this.broken) this.slots[index] = this.spawn();
    };
    child.on('exit', (code, signal) => gone(`exited with ${signal ?? `code ${code}`}`));
    child.on('error', (error) => {
      lastError ||= error.message;
    });
    child.send(this.init);
    return slot;
  }

  /** Runs one work unit (here: one run) on a free child; resolves with its records. */
  async run(runs: RunRef[], onLine: (line: string) => void = () => {}): Promise<RunRecord[]> {
    if (this.closed) throw new Error('the child pool is closed');
    if (this.broken) throw this.broken;
    const slot = this.slots.find((s) => !s.busy && s.child.exitCode === null && s.child.signalCode === null);
    if (!slot) throw new Error(`all ${this.slots.length} children are busy`);
    slot.busy = true;
    try {
      await slot.ready;
    } catch (error) {
      slot.busy = false;
      throw error;
    }
    return new Promise<RunRecord[]>((resolve, reject) => {
      slot.current = { records: [], resolve, reject, onLine };
      slot.child.send({ type: 'unit', runs } satisfies ParentMessage);
    });
  }

  /** Asks every child to exit; kills those that have not after `graceMs`. */
  async close(graceMs = 5000): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.slots.map(async ({ child }) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        try {
          child.send({ type: 'exit' } satisfies ParentMessage);
        } catch {
          child.kill('SIGKILL');
        }
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }),
    );
  }
}
