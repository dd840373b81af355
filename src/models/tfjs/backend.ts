/**
 * Chooses the TensorFlow.js backend once per process: tensorflow-gpu → tensorflow → wasm → cpu.
 * The two native packages are optional peers loaded by dynamic import; failures are remembered and
 * reported, so `info` can say why the GPU is not in use. `MSD_BACKEND` forces one backend (and fails
 * loudly when it cannot start); the `prefer` option only says where to start in the chain.
 *
 * Some kernels are missing on some backends (wasm has no Conv2DBackpropFilter): `withCpuFallback`
 * runs such work on cpu instead of failing, and says so once per kernel.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { callable, parseOptions } from '../../validation/index.js';
import { BackendError, ModelError } from '../errors.js';
import { namedChoice } from '../option-fields.js';
import { tf } from './tf.js';

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

/** The chain, fastest first. */
export const BACKEND_ORDER: readonly BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

export interface BackendFailure {
  readonly backend: BackendName;
  readonly reason: string;
}

export interface BackendInfo {
  /** The chosen backend, in this project's names. */
  readonly name: BackendName;
  /** The name tfjs knows it by (`tensorflow` for both native packages). */
  readonly tfBackend: string;
  /** Package versions: tfjs-core, tfjs-layers, the backend package. */
  readonly versions: Readonly<Record<string, string>>;
  /** Threads the backend computes with (wasm in Node: 1, `setThreadsCount` has no effect there). */
  readonly threads: number;
  /** How the backend was chosen. */
  readonly chosenBy: 'env' | 'option' | 'auto';
  /** Backends tried before this one and why each failed. */
  readonly failures: readonly BackendFailure[];
}

export interface InitBackendOptions {
  /** Start the chain here (falls further down when it fails). `MSD_BACKEND` wins over this. */
  prefer?: BackendName;
  /** Where the one line announcing the choice goes (default stderr); pass `() => {}` for silence. */
  log?: (line: string) => void;
}

const initBackendSchema = z.strictObject(
  {
    prefer: namedChoice(BACKEND_ORDER).optional(),
    log: callable<(line: string) => void>('a function (line) => void, e.g. () => {} for silence').optional(),
  } satisfies Record<keyof InitBackendOptions, z.ZodType>,
  { error: 'an object, e.g. { prefer: "wasm" }' },
);

const ALIASES: Readonly<Record<string, BackendName>> = {
  'tensorflow-gpu': 'tensorflow-gpu',
  gpu: 'tensorflow-gpu',
  'tfjs-node-gpu': 'tensorflow-gpu',
  tensorflow: 'tensorflow',
  node: 'tensorflow',
  'tfjs-node': 'tensorflow',
  wasm: 'wasm',
  cpu: 'cpu',
};

/** Reads a backend name as a user writes it (case-insensitive, with aliases such as `gpu`). */
export function parseBackendName(value: string, source = 'backend'): BackendName {
  const name = ALIASES[value.trim().toLowerCase()];
  if (!name) {
    throw new BackendError(`${source} "${value}" is not a backend; use one of ${BACKEND_ORDER.join(', ')}`);
  }
  return name;
}

const require = createRequire(import.meta.url);
const failures = new Map<BackendName, string>();
let current: BackendInfo | undefined;
let pending: Promise<BackendInfo> | undefined;
let pendingKey: string | undefined;
let wasmThreads: number | undefined;

/**
 * Starts the best available backend (idempotent: later calls with the same request return the same
 * answer; a different request switches). Throws BackendError when `MSD_BACKEND` names a backend that
 * cannot start.
 */
export function initBackend(options: InitBackendOptions = {}): Promise<BackendInfo> {
  const env = process.env.MSD_BACKEND?.trim();
  let forced: BackendName | undefined;
  try {
    parseOptions(initBackendSchema, options, { error: ModelError });
    forced = env ? parseBackendName(env, 'MSD_BACKEND') : undefined;
  } catch (error) {
    return Promise.reject(error);
  }
  const key = forced ? `env:${forced}` : options.prefer ? `option:${options.prefer}` : 'auto';
  if (pending && pendingKey === key) return pending;
  pendingKey = key;
  pending = choose(forced, options).catch((error: unknown) => {
    pending = undefined;
    pendingKey = undefined;
    throw error;
  });
  return pending;
}

/** The backend chosen so far, if any. */
export function currentBackend(): BackendInfo | undefined {
  return current;
}

async function choose(forced: BackendName | undefined, options: InitBackendOptions): Promise<BackendInfo> {
  // Production mode skips tfjs's per-op debugging checks and its console banners.
  tf.enableProdMode();
  const chain = forced ? [forced] : BACKEND_ORDER.slice(BACKEND_ORDER.indexOf(options.prefer ?? BACKEND_ORDER[0]));
  const tried: BackendFailure[] = [];
  for (const name of chain) {
    const reason = await tryStart(name);
    if (reason === undefined) {
      current = describe(name, forced ? 'env' : options.prefer ? 'option' : 'auto', tried);
      const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
      log(formatBackendInfo(current, { brief: true }));
      return current;
    }
    tried.push({ backend: name, reason });
  }
  const detail = tried.map((f) => `${f.backend}: ${f.reason}`).join('; ');
  throw new BackendError(
    forced
      ? `MSD_BACKEND=${forced} cannot start (${detail}); unset it or choose one of ${BACKEND_ORDER.join(', ')}`
      : `no TensorFlow.js backend could start (${detail})`,
  );
}

/** Starts one backend; returns undefined on success or the reason it failed (remembered). */
async function tryStart(name: BackendName): Promise<string | undefined> {
  const known = failures.get(name);
  if (known !== undefined) return known;
  try {
    if (name === 'tensorflow-gpu' || name === 'tensorflow') {
      await import(nativePackage(name));
      if (!(await tf.setBackend('tensorflow'))) throw new Error('the tensorflow backend did not initialise');
    } else if (name === 'wasm') {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      wasm.setWasmPaths(wasmDirectory());
      const before = processListeners();
      try {
        if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not initialise');
      } finally {
        removeListenersAddedSince(before);
      }
      wasmThreads = wasm.getThreadsCount();
    } else {
      if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not initialise');
    }
    await tf.ready();
    return undefined;
  } catch (error) {
    const reason = shortReason(error);
    failures.set(name, reason);
    return reason;
  }
}

type ProcessListener = (...args: unknown[]) => void;
const WATCHED_EVENTS = ['uncaughtException', 'unhandledRejection'] as const;

function listenersOf(event: string): ProcessListener[] {
  return (process.listeners as (e: string) => ProcessListener[])(event);
}

function processListeners(): Map<string, ProcessListener[]> {
  return new Map(WATCHED_EVENTS.map((event) => [event, listenersOf(event)]));
}

/**
 * The wasm module's loader installs process handlers that re-throw every uncaught error from inside
 * its minified source (printing a line of several hundred kilobytes). Node's own handling is the
 * same minus that noise, so the handlers are removed.
 */
function removeListenersAddedSince(before: Map<string, ProcessListener[]>): void {
  for (const event of WATCHED_EVENTS) {
    const known = before.get(event) ?? [];
    for (const listener of listenersOf(event)) {
      if (!known.includes(listener)) process.removeListener(event, listener as never);
    }
  }
}

function nativePackage(name: 'tensorflow-gpu' | 'tensorflow'): string {
  return name === 'tensorflow-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
}

/** The folder holding the .wasm binaries, as a file path with a trailing separator (no network). */
function wasmDirectory(): string {
  const main = require.resolve('@tensorflow/tfjs-backend-wasm');
  for (let dir = dirname(main); dir !== dirname(dir); dir = dirname(dir)) {
    for (const candidate of [dir, join(dir, 'dist')]) {
      if (existsSync(join(candidate, 'tfjs-backend-wasm.wasm'))) return candidate.endsWith('/') ? candidate : `${candidate}/`;
    }
    if (existsSync(join(dir, 'package.json')) && dir.endsWith('tfjs-backend-wasm')) break;
  }
  throw new Error(`tfjs-backend-wasm.wasm not found near ${main}`);
}

function shortReason(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const firstLine = message.split('\n')[0];
  if (/Cannot find (package|module)/.test(firstLine)) return 'package not installed';
  return firstLine.length > 200 ? `${firstLine.slice(0, 200)}…` : firstLine;
}

function packageVersion(name: string): string | undefined {
  try {
    return (require(`${name}/package.json`) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

function describe(name: BackendName, chosenBy: BackendInfo['chosenBy'], tried: readonly BackendFailure[]): BackendInfo {
  const versions: Record<string, string> = {};
  for (const [label, pkg] of [
    ['tfjs-core', '@tensorflow/tfjs-core'],
    ['tfjs-layers', '@tensorflow/tfjs-layers'],
    ...(name === 'wasm' ? [['tfjs-backend-wasm', '@tensorflow/tfjs-backend-wasm']] : []),
    ...(name === 'tensorflow' || name === 'tensorflow-gpu' ? [[nativePackage(name).slice('@tensorflow/'.length), nativePackage(name)]] : []),
  ] as const) {
    const version = packageVersion(pkg);
    if (version) versions[label] = version;
  }
  return { name, tfBackend: tf.getBackend(), versions, threads: threadCount(name), chosenBy, failures: tried };
}

function threadCount(name: BackendName): number {
  if (name === 'tensorflow' || name === 'tensorflow-gpu') return cpus().length;
  if (name === 'wasm') {
    // The threaded wasm build needs Web Workers with SharedArrayBuffer, which Node's loader does not use.
    return wasmThreads ?? 1;
  }
  return 1;
}

/** One line (brief) or a few lines describing the backend, for logs and the `info` command. */
export function formatBackendInfo(info: BackendInfo, options: { brief?: boolean } = {}): string {
  const versions = Object.entries(info.versions)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const skipped = info.failures.map((f) => `${f.backend} (${f.reason})`).join(', ');
  if (options.brief) {
    return `tfjs backend: ${info.name} (${info.threads} thread${info.threads === 1 ? '' : 's'}, chosen by ${info.chosenBy})${skipped ? `; unavailable: ${skipped}` : ''}`;
  }
  return [
    `backend:   ${info.name} (tfjs name "${info.tfBackend}", chosen by ${info.chosenBy})`,
    `threads:   ${info.threads}`,
    `versions:  ${versions}`,
    `skipped:   ${skipped || 'none'}`,
  ].join('\n');
}

const announcedFallbacks = new Set<string>();

/** The kernel named by a tfjs "Kernel 'X' not registered for backend 'Y'" error, if it is one. */
export function missingKernel(error: unknown): string | undefined {
  const message = error instanceof Error ? error.message : '';
  return /Kernel '([^']+)' not registered for backend/.exec(message)?.[1];
}

/** Kernels of `names` the active backend does not have. */
export function kernelsMissing(names: readonly string[], backend = tf.getBackend()): string[] {
  return names.filter((name) => tf.getKernel(name, backend) === undefined);
}

/**
 * Runs `fn`; when the active backend lacks a kernel it needs, runs it again on cpu (telling `log`
 * once per kernel) and switches back. Tensors move between backends on their own.
 */
export function withCpuFallback<T>(what: string, fn: () => T, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): T {
  try {
    return fn();
  } catch (error) {
    const kernel = missingKernel(error);
    if (kernel === undefined || tf.getBackend() === 'cpu') throw error;
    const active = tf.getBackend();
    if (!announcedFallbacks.has(`${active}:${kernel}`)) {
      announcedFallbacks.add(`${active}:${kernel}`);
      log(`tfjs backend ${active} has no ${kernel} kernel: running ${what} on cpu`);
    }
    return onCpu(fn);
  }
}

/** Runs `fn` on the cpu backend and restores the previous one. Synchronous: cpu initialises synchronously. */
export function onCpu<T>(fn: () => T): T {
  const previous = tf.getBackend();
  if (!tf.findBackend('cpu')) throw new BackendError('the cpu backend is not available');
  void tf.setBackend('cpu');
  try {
    return fn();
  } finally {
    void tf.setBackend(previous);
  }
}
