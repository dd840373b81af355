/**
 * The surrogate flags every command that runs MAD shares (serve, proxy, perturb): one line to add
 * them, one to read them. Reading checks the combination only; no model is loaded here (commands
 * import the models layer when they need it, so plain runs never start TensorFlow.js).
 *
 *   --surrogate PATH         the surrogate, whatever it is: a TF.js model's JSON file by any name
 *                            (tfjs-converter's <name>.json, weight files beside it as its manifest
 *                            names them) or its directory (layers or graph model, nsfwjs bundles),
 *                            or an ONNX file (by extension or content)
 *   --surrogate-from DIR     alias of --surrogate (its older name for any TF.js model or .onnx file)
 *   --surrogate-onnx FILE    alias of --surrogate for an ONNX file (read as ONNX whatever its name)
 *   --reinit SEED            with any of them: the same architecture with fresh weights drawn from
 *                            SEED (layers and graph models, ONNX)
 *   --surrogate-thread       run that surrogate in a worker thread (the event loop stays free while
 *                            it computes; a second copy of the model in memory)
 *   --surrogate-engine onnx  with a TF.js layers model: convert it to ONNX at start and run it on
 *                            onnxruntime-node (forward-only, many times faster on CPU)
 *
 * A surrogate named by these flags is checked when it loads (loadSurrogate's `check`): a warning
 * line on stderr when it looks like the served model itself (its stored weights, no --reinit) or
 * when its softmax is constant or one-hot on probe inputs, since MAD cannot steer with it.
 */
import type { Command } from 'commander';
import { fromText, integerAtLeast, oneOf } from '../../validation/index.js';
import { parseFlag } from './flags.js';

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
  /** A TF.js model (JSON file by any name, or directory) or an ONNX file (loadSurrogate's `dir`, the same as its `path`). */
  dir?: string;
  onnx?: string;
  reinit?: number;
  /** Load it in a worker thread (loadSurrogate's `thread`). */
  thread?: boolean;
  /** loadSurrogate's `engine`: where a TF.js layers model runs. */
  engine?: 'tfjs' | 'onnx';
  /**
   * loadSurrogate's `check`: warn on stderr when the loaded surrogate cannot steer MAD. Set on every
   * source read from flags, as a non-enumerable property: it is how the command asks for the check,
   * not where the surrogate comes from (it stays out of comparisons, logs and worker messages).
   */
  check?: boolean;
}

/** Help of --surrogate, the one flag for every kind of surrogate. */
export const SURROGATE_HELP =
  'MAD’s surrogate: a TF.js model’s JSON file by any name (weight files beside it, as its manifest names them) or its directory (layers or graph model, nsfwjs bundles), or an ONNX file; add --reinit SEED for its architecture freshly initialised (--surrogate-from and --surrogate-onnx are aliases)';

export const SURROGATE_THREAD_HELP =
  'run the surrogate in a worker thread: the event loop stays free during its forward passes, at the cost of a second copy of the model in memory';

export const SURROGATE_ENGINE_HELP =
  'with --surrogate naming a TF.js layers model: run it on TF.js (default; differentiable) or convert it to ONNX at start and run it on onnxruntime-node (forward-only; many times faster on CPU)';

export const SURROGATE_FROM_HELP = 'alias of --surrogate: any TF.js model (its JSON file or directory) or an ONNX file';

export const SURROGATE_ONNX_HELP =
  'alias of --surrogate for an ONNX model, read as ONNX whatever its name (onnxruntime-node; forward-only, so no mad jacobian=full)';

export const REINIT_HELP =
  'with --surrogate (or its aliases): the same architecture, freshly initialised from this seed, for layers models, graph models and ONNX (the MAD paper’s best surrogate)';

/**
 * Adds --surrogate (when the command has not defined its own), --surrogate-from, --surrogate-onnx,
 * --reinit, --surrogate-thread and --surrogate-engine.
 */
export function addSurrogateFlags(command: Command): Command {
  if (!command.options.some((option) => option.long === '--surrogate')) command.option('--surrogate <path>', SURROGATE_HELP);
  return command
    .option('--surrogate-from <path>', SURROGATE_FROM_HELP)
    .option('--surrogate-onnx <file>', SURROGATE_ONNX_HELP)
    .option('--reinit <seed>', REINIT_HELP)
    .option('--surrogate-thread', SURROGATE_THREAD_HELP)
    .option('--surrogate-engine <tfjs|onnx>', SURROGATE_ENGINE_HELP);
}

/** The surrogate the flags ask for, undefined when none; a bad combination goes to `fail` saying what to write. */
export function surrogateSourceFromFlags(flags: SurrogateFlags, fail: (message: string) => never): SurrogateSource | undefined {
  const given = [flags.surrogate && '--surrogate', flags.surrogateFrom && '--surrogate-from', flags.surrogateOnnx && '--surrogate-onnx'].filter(Boolean);
  if (given.length > 1)
    fail(
      `${given.join(' and ')} both name a surrogate; give one (--surrogate PATH takes any of them: a TF.js model’s JSON file or directory, or an ONNX file)`,
    );
  let reinit: number | undefined;
  if (flags.reinit !== undefined) {
    const seed = parseFlag(fromText(integerAtLeast(0, 'an integer seed in 0..4294967295', 0xffffffff)), flags.reinit, '--reinit', fail);
    if (given.length === 0)
      fail(
        '--reinit needs the architecture to re-initialise: add --surrogate PATH (e.g. the victim’s model: its JSON file or directory, or an ONNX file; as before, you can also add --surrogate-from DIR or --surrogate-onnx FILE)',
      );
    reinit = seed;
  }
  if (flags.surrogateThread && given.length === 0)
    fail(
      '--surrogate-thread needs a surrogate to run: add --surrogate-from DIR|FILE.onnx, or --surrogate PATH (the same: a TF.js model’s JSON file or directory, or an ONNX file)',
    );
  let engine: SurrogateSource['engine'];
  const tfjsPath = flags.surrogate ?? flags.surrogateFrom;
  if (flags.surrogateEngine !== undefined) {
    const chosen = parseFlag(oneOf(['tfjs', 'onnx'], 'tfjs or onnx'), flags.surrogateEngine, '--surrogate-engine', fail);
    if (!tfjsPath || tfjsPath.toLowerCase().endsWith('.onnx'))
      fail(
        '--surrogate-engine chooses where a TF.js model runs: give it with --surrogate-from DIR, or --surrogate PATH naming a TF.js model (an ONNX file always runs on onnxruntime)',
      );
    engine = chosen;
  }
  const thread = flags.surrogateThread ? { thread: true } : {};
  const withEngine = engine ? { engine } : {};
  let source: SurrogateSource | undefined;
  if (flags.surrogateOnnx) source = { onnx: flags.surrogateOnnx, reinit, ...thread };
  else if (tfjsPath !== undefined) source = { dir: tfjsPath, reinit, ...thread, ...withEngine };
  if (source) Object.defineProperty(source, 'check', { value: true, enumerable: false });
  return source;
}
