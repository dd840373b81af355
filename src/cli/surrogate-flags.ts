/**
 * The surrogate flags every command that runs MAD shares (serve, proxy, perturb): one line to add
 * them, one to read them. Reading checks the combination only; no model is loaded here (commands
 * import the models layer when they need it, so plain runs never start TensorFlow.js).
 *
 *   --surrogate DIR          a saved chain model (as before)
 *   --surrogate-from DIR     any TF.js model directory (layers or graph, nsfwjs bundles), or an .onnx file
 *   --surrogate-onnx FILE    an ONNX model (onnxruntime-node, forward-only)
 *   --reinit SEED            with --surrogate-from / --surrogate-onnx / --surrogate: the same
 *                            architecture with fresh weights drawn from SEED
 *   --surrogate-thread       run that surrogate in a worker thread (the event loop stays free while
 *                            it computes; a second copy of the model in memory)
 *   --surrogate-engine onnx  with --surrogate-from: convert the TF.js layers model to ONNX at start and
 *                            run it on onnxruntime-node (forward-only, many times faster on CPU)
 */
import type { Command } from 'commander';

export interface SurrogateFlags {
  surrogate?: string;
  surrogateFrom?: string;
  surrogateOnnx?: string;
  reinit?: string;
  surrogateThread?: boolean;
  surrogateEngine?: string;
}

/** Where the surrogate comes from, as loadSurrogate (models layer) takes it. */
export interface SurrogateSource {
  dir?: string;
  onnx?: string;
  reinit?: number;
  /** Load it in a worker thread (loadSurrogate's `thread`). */
  thread?: boolean;
  /** loadSurrogate's `engine`: where a TF.js layers model runs. */
  engine?: 'tfjs' | 'onnx';
}

export const SURROGATE_THREAD_HELP = 'run the surrogate in a worker thread: the event loop stays free during its forward passes, at the cost of a second copy of the model in memory';

export const SURROGATE_ENGINE_HELP = 'with --surrogate-from DIR: run the TF.js layers model on TF.js (default; differentiable) or convert it to ONNX at start and run it on onnxruntime-node (forward-only; MobileNetV2 11–12× faster on CPU here)';

/** Adds --surrogate-from, --surrogate-onnx, --reinit, --surrogate-thread and --surrogate-engine (the command keeps its own --surrogate). */
export function addSurrogateFlags(command: Command): Command {
  return command
    .option('--surrogate-from <dir>', 'surrogate from any TF.js model directory (layers or graph model, nsfwjs bundles) or an .onnx file')
    .option('--surrogate-onnx <file>', 'surrogate from an ONNX model (onnxruntime-node; forward-only, so no mad jacobian=full)')
    .option('--reinit <seed>', 'with --surrogate-from/--surrogate-onnx/--surrogate: the same architecture, freshly initialised from this seed (the MAD paper’s best surrogate)')
    .option('--surrogate-thread', SURROGATE_THREAD_HELP)
    .option('--surrogate-engine <tfjs|onnx>', SURROGATE_ENGINE_HELP);
}

/** The surrogate the flags ask for, undefined when none; a bad combination goes to `fail` saying what to write. */
export function surrogateSourceFromFlags(flags: SurrogateFlags, fail: (message: string) => never): SurrogateSource | undefined {
  const given = [flags.surrogate && '--surrogate', flags.surrogateFrom && '--surrogate-from', flags.surrogateOnnx && '--surrogate-onnx'].filter(Boolean);
  if (given.length > 1) fail(`${given.join(' and ')} both name a surrogate; give one`);
  let reinit: number | undefined;
  if (flags.reinit !== undefined) {
    const seed = Number(flags.reinit);
    if (flags.reinit.trim() === '' || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) fail(`--reinit must be an integer seed in 0..4294967295, got "${flags.reinit}"`);
    if (given.length === 0) fail('--reinit needs the architecture to re-initialise: add --surrogate-from DIR (e.g. the victim’s model directory) or --surrogate-onnx FILE');
    reinit = seed;
  }
  if (flags.surrogateThread && given.length === 0) fail('--surrogate-thread needs a surrogate to run: add --surrogate-from DIR|FILE.onnx, --surrogate-onnx FILE or --surrogate DIR');
  let engine: SurrogateSource['engine'];
  if (flags.surrogateEngine !== undefined) {
    if (flags.surrogateEngine !== 'tfjs' && flags.surrogateEngine !== 'onnx') fail(`--surrogate-engine must be tfjs or onnx, got "${flags.surrogateEngine}"`);
    if (!flags.surrogateFrom || flags.surrogateFrom.toLowerCase().endsWith('.onnx')) fail('--surrogate-engine chooses where a TF.js model directory runs: give it with --surrogate-from DIR (an ONNX file always runs on onnxruntime)');
    engine = flags.surrogateEngine;
  }
  const thread = flags.surrogateThread ? { thread: true } : {};
  const withEngine = engine ? { engine } : {};
  if (flags.surrogateOnnx) return { onnx: flags.surrogateOnnx, reinit, ...thread };
  const dir = flags.surrogateFrom ?? flags.surrogate;
  return dir === undefined ? undefined : { dir, reinit, ...thread, ...withEngine };
}
