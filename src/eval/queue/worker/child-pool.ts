/**
 * The `--jobs` children of a queue worker: the same child processes (eval/run/worker.ts), the same init
 * message and the same work units as a local `msd eval --jobs N`, handed out one run at a time as
 * the queue hands runs to this machine. A child that dies fails its run only; the next run gets a
 * fresh child. A run waiting for a child whose replacement dies before it is ready waits for the next
 * replacement: the run never reached a child, so it has not failed. Past `runTimeoutMs` a child is
 * killed and its run fails. Each child's stderr is passed through and also told to the run it is
 * working on (the queue keeps it as the run's log).
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { EvalConfig } from '../../config.js';
import { initMessage, trainingEnv, workerScript, type ChildMessage, type ParentMessage, type RunRef } from '../../run/parallel.js';
import type { RunRecord } from '../../records/run-record.js';
import type { EvaluationWorld } from '../../world/world.js';
import { formatDuration } from '../status.js';

interface Slot {
  child: ChildProcess;
  ready: Promise<void>;
  busy: boolean;
  started?: boolean;
  /** The run in progress: where its records, its end and its log lines go. */
  current?: { records: RunRecord[]; resolve(records: RunRecord[]): void; reject(error: Error): void; onLine(line: string): void };
  /** Kills the child once the run in progress has had its time. */
  deadline?: ReturnType<typeof setTimeout>;
  /** Set when the deadline killed the child: what its run fails with. */
  overdue?: Error;
}

/** The pool takes no more runs: its children keep dying before they are ready. A run refused with it never reached a child. */
export class ChildPoolFailure extends Error {
  override name = 'ChildPoolFailure';
}

/** The run's time (--run-timeout) ran out before a child was ready for it: the run fails (a try), the child is killed. */
export class RunTimeoutError extends Error {
  override name = 'RunTimeoutError';
}

export interface ChildPoolOptions {
  config: EvalConfig;
  world: EvaluationWorld;
  cacheDir: string;
  jobs: number;
  /** Where the children's stderr goes besides the run's log (default: this process's stderr). */
  stderr?: (text: string) => void;
  /** A run still going after this long has its child killed, and fails (default: no limit). */
  runTimeoutMs?: number;
}

export class ChildPool {
  private readonly slots: Slot[] = [];
  private readonly init: ParentMessage;
  private closed = false;
  /** Children in a row that died before they were ready: past 3, none is started again. */
  private failedStarts = 0;
  private broken?: ChildPoolFailure;
  private tellBroken!: (error: ChildPoolFailure) => void;
  /** Resolves the moment the pool breaks, so that its owner stops taking runs at once. */
  readonly broke = new Promise<ChildPoolFailure>((resolve) => (this.tellBroken = resolve));

  constructor(private readonly options: ChildPoolOptions) {
    this.init = initMessage(options.config, options.world, options.cacheDir);
  }

  /** Starts every child and waits until each has loaded the victim. */
  async start(): Promise<void> {
    for (let i = 0; i < this.options.jobs; i++) this.slots.push(this.spawn());
    await Promise.all(this.slots.map((s) => s.ready));
  }

  /** Set once children keep dying before they are ready: the pool takes no more runs. */
  get failure(): ChildPoolFailure | undefined {
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
        clearTimeout(slot.deadline);
        const current = slot.current;
        slot.current = undefined;
        slot.busy = false;
        current?.resolve(current.records);
      } else if (message.type === 'error') lastError = message.message;
    });
    const gone = (why: string) => {
      clearTimeout(slot.deadline);
      const error = slot.overdue ?? new Error(lastError ? `evaluation child ${child.pid}: ${lastError}` : `evaluation child ${child.pid} ${why}`);
      readyReject(error);
      const current = slot.current;
      slot.current = undefined;
      current?.reject(error);
      if (!this.closed && !slot.started && ++this.failedStarts >= 3 && !this.broken) {
        this.broken = new ChildPoolFailure(`evaluation children keep failing to start; the last one: ${error.message}`);
        this.tellBroken(this.broken);
      }
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

  /**
   * Runs one work unit (here: one run) on a free child once it is ready; resolves with its records.
   * Throws ChildPoolFailure, the run not sent to any child, when the pool breaks first.
   */
  async run(runs: RunRef[], onLine: (line: string) => void = () => {}): Promise<RunRecord[]> {
    // The time limit counts from here: waiting for a child to be ready is part of the run.
    const limit = this.options.runTimeoutMs;
    const endsAt = limit === undefined ? undefined : Date.now() + limit;
    for (;;) {
      if (this.closed) throw new Error('the child pool is closed');
      if (this.broken) throw this.broken;
      const slot = this.slots.find((s) => !s.busy && s.child.exitCode === null && s.child.signalCode === null);
      if (!slot) throw new Error(`all ${this.slots.length} children are busy`);
      slot.busy = true;
      try {
        await this.readyBefore(slot, endsAt);
      } catch (error) {
        slot.busy = false;
        if (error instanceof RunTimeoutError) throw error;
        // Died before it was ready: its replacement (already in its place) or the pool's failure is next.
        continue;
      }
      return this.send(slot, runs, onLine, endsAt);
    }
  }

  /** The slot's child ready, or killed (a RunTimeoutError) when the run's time is up first. */
  private async readyBefore(slot: Slot, endsAt: number | undefined): Promise<void> {
    if (endsAt === undefined) return slot.ready;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          reject(
            new RunTimeoutError(
              `the run exceeded the time limit of ${formatDuration(this.options.runTimeoutMs! / 1000)} (--run-timeout) waiting for evaluation child ${slot.child.pid} to be ready; the child was killed`,
            ),
          );
          slot.child.kill('SIGKILL');
        },
        Math.max(0, endsAt - Date.now()),
      );
    });
    try {
      await Promise.race([slot.ready, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private send(slot: Slot, runs: RunRef[], onLine: (line: string) => void, endsAt: number | undefined): Promise<RunRecord[]> {
    return new Promise<RunRecord[]>((resolve, reject) => {
      slot.current = { records: [], resolve, reject, onLine };
      const limit = this.options.runTimeoutMs;
      if (limit !== undefined && endsAt !== undefined)
        slot.deadline = setTimeout(
          () => {
            // This process renews the run's lock whatever its child does: only a kill frees a hung child's run.
            slot.overdue = new Error(
              `the run exceeded the time limit of ${formatDuration(limit / 1000)} (--run-timeout); its evaluation child ${slot.child.pid} was killed`,
            );
            slot.child.kill('SIGKILL');
          },
          Math.max(0, endsAt - Date.now()),
        );
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
