/**
 * One factory for every kind of surrogate: a model path (a TF.js model's JSON file by any name or
 * its directory, layers or graph, nsfwjs bundles included; or an ONNX file), a model object, or ONNX
 * bytes; optionally the same architecture with fresh seeded weights (`reinit`), the MAD paper's best
 * surrogate, and a start-up check that it can steer MAD at all (`check`, see check-surrogate.ts).
 */
import type { BackendName } from '../tfjs/backend.js';
import { checkSurrogate, recordSurrogateOrigin, surrogateWarningLine, type CheckSurrogateOptions } from './check-surrogate.js';
import { ModelError, ModelFileError } from '../errors.js';
import { reinitGraphArtifacts, reinitGraphModel } from '../tfjs/graph-reinit.js';
import { layersModelToOnnx } from '../onnx/layers-to-onnx.js';
import { loadTfjsModel, modelPathKind, readModelDir } from '../tfjs/model-dir.js';
import { OnnxSurrogate, type OnnxSurrogateOptions } from '../onnx/onnx-surrogate.js';
import { reinitFromTopology, reinitLayersModel } from '../tfjs/reinit.js';
import type { SurrogateModel } from '../surrogate-model.js';
import { parseSurrogateOutput } from '../surrogate-output.js';
import { hasPlan } from '../tfjs/plan/plan.js';
import { Surrogate } from '../tfjs/plan/plan-surrogate.js';
import { TfjsSurrogate, type TfjsSurrogateOptions } from '../tfjs/tfjs-surrogate.js';
import { loadThreadedSurrogate } from './threaded-surrogate.js';
import { tf, type LayersModel } from '../tfjs/tf.js';
import { parseOptions } from '../../validation/index.js';
import { loadSurrogateSchema } from './load-surrogate-schema.js';

export { SURROGATE_ENGINES } from './load-surrogate-schema.js';

export interface LoadSurrogateOptions extends TfjsSurrogateOptions {
  /**
   * The model's path, whatever it is: a TF.js model's JSON file by any name (tfjs-converter's
   * `<name>.json`; its weight files are named in its manifest, relative to its folder), a TF.js model
   * directory (model.json, a single `<name>.json`, or nsfwjs's model.min.js bundle), or an ONNX file
   * (by its `.onnx` extension or, under another name, by its first bytes).
   */
  path?: string;
  /** The same as `path` (its older name): a TF.js model directory or JSON file, or an ONNX file. */
  dir?: string;
  /** A model object. The surrogate owns it (dispose() disposes it) unless `reinit` or engine 'onnx' is given, which leave it untouched. */
  model?: LayersModel | tf.GraphModel;
  /** An ONNX model: a file path or its bytes. */
  onnx?: string | Uint8Array;
  /** The same architecture with fresh weights drawn from this seed (layers models, graph models and ONNX). */
  reinit?: number;
  /** A chain model (Dense/Conv2D/pooling) runs through the fast plan-based Surrogate, with closed-form Gram matrices (default true); false forces TfjsSurrogate. */
  usePlan?: boolean;
  /**
   * Where a TF.js layers model runs: 'tfjs' (default, differentiable) or 'onnx', converted at load
   * (../onnx/layers-to-onnx.ts) and run forward-only by onnxruntime-node, many times faster on CPU
   * (docs/measurements/benchmarks.md, models-surrogates). Refused for graph models
   * and for layers the converter does not know (it names them).
   */
  engine?: SurrogateEngine;
  /** ONNX only: threads inside one operator. */
  threads?: OnnxSurrogateOptions['threads'];
  /**
   * Run the surrogate in a worker thread (see threaded-surrogate.ts): the event loop stays free
   * while it computes, at the cost of a second copy of the model in the worker's memory and one copy
   * of the input rows per call. Needs `dir` or `onnx` (a model object cannot cross threads).
   */
  thread?: boolean;
  /** With `thread` only: the worker's TF.js backend (default the main thread's; MSD_BACKEND wins). */
  backend?: BackendName;
  /**
   * Check the loaded surrogate (checkSurrogate: is it the victim, do its directions carry
   * information?) and log each warning, by default as one line on stderr. `true` checks with the
   * defaults; an object gives the victim to compare with, the probe rows and the log function. The
   * surrogate is returned either way: warnings never stop it.
   */
  check?: boolean | (CheckSurrogateOptions & { log?: (line: string) => void });
}

export type SurrogateEngine = 'tfjs' | 'onnx';

/** Builds the surrogate `options` describe; throws ModelError (or ModelFileError naming a file) for a bad choice. */
export async function loadSurrogate(options: LoadSurrogateOptions): Promise<SurrogateModel> {
  parseOptions(loadSurrogateSchema, options, { error: ModelError });
  const sources = (['path', 'dir', 'model', 'onnx'] as const).filter((key) => options[key] !== undefined);
  if (sources.length !== 1) {
    throw new ModelError(
      `give exactly one of dir, model or onnx for the surrogate (path is dir’s other name; got ${sources.length ? sources.join(' and ') : 'none'})`,
    );
  }
  const surrogate = await loadUnchecked(options);
  const { path, dir, onnx, model, reinit } = options;
  recordSurrogateOrigin(surrogate, { path: path ?? dir, onnx, model, reinit });
  if (options.check) {
    const { log = (line: string) => void process.stderr.write(`${line}\n`), ...checks } = options.check === true ? {} : options.check;
    try {
      for (const warning of await checkSurrogate(surrogate, checks)) log(surrogateWarningLine(warning));
    } catch (error) {
      surrogate.dispose();
      throw error;
    }
  }
  return surrogate;
}

async function loadUnchecked(options: LoadSurrogateOptions): Promise<SurrogateModel> {
  if (options.thread) {
    const { thread: _, check: __, ...rest } = options;
    return loadThreadedSurrogate(rest);
  }
  if (options.backend !== undefined)
    throw new ModelError(
      'backend applies to a threaded surrogate (thread: true); in this thread the surrogate uses the process’s backend (initBackend, MSD_BACKEND)',
    );
  const output = parseSurrogateOutput(options.output);
  const path = options.path ?? options.dir;
  const onnx = options.onnx ?? (path !== undefined && (await modelPathKind(path)) === 'onnx' ? path : undefined);
  if (onnx !== undefined) {
    return OnnxSurrogate.load(onnx, {
      reinit: options.reinit,
      output,
      chunkRows: options.chunkRows,
      inputShape: options.inputShape,
      outputName: options.outputName,
      threads: options.threads,
    });
  }
  if (options.engine === 'onnx') return onnxFromLayers(options, output);
  const tfjsOptions: TfjsSurrogateOptions = {
    output,
    chunkRows: options.chunkRows,
    inputShape: options.inputShape,
    outputName: options.outputName,
    classes: options.classes,
  };
  if (options.model) {
    if (options.reinit === undefined) return choose(options.model, tfjsOptions, options.usePlan);
    if (options.model instanceof tf.GraphModel) return ownedSurrogate(await reinitGraphModel(options.model, options.reinit), tfjsOptions, options.usePlan);
    return ownedSurrogate(await reinitLayersModel(options.model, options.reinit), tfjsOptions, options.usePlan);
  }
  const target = path as string;
  if (options.reinit !== undefined) {
    // Only the topology (and, for a graph model, the manifest) is needed: the trained weights are never decoded.
    const read = await readModelDir(target);
    if (read.kind === 'graph')
      return ownedSurrogate(await loadGraphArtifacts(reinitGraphArtifacts(read.artifacts, options.reinit, read.file), read.file), tfjsOptions, options.usePlan);
    return ownedSurrogate(await reinitFromTopology(read.artifacts.modelTopology as object, options.reinit), tfjsOptions, options.usePlan);
  }
  const { model } = await loadTfjsModel(target);
  return ownedSurrogate(model, tfjsOptions, options.usePlan);
}

async function loadGraphArtifacts(artifacts: tf.io.ModelArtifacts, file: string): Promise<tf.GraphModel> {
  try {
    return await tf.loadGraphModel(tf.io.fromMemory(artifacts));
  } catch (error) {
    throw new ModelFileError(file, `not a loadable graph model (${error instanceof Error ? error.message : String(error)})`);
  }
}

const GRAPH_NOT_CONVERTED = 'engine onnx converts layers models, not graph models; drop engine onnx, or convert the SavedModel to ONNX (tf2onnx) and load that';

/** A TF.js layers model (trained, or re-initialised first) converted to ONNX and run by onnxruntime-node. */
async function onnxFromLayers(options: LoadSurrogateOptions, output: ReturnType<typeof parseSurrogateOutput>): Promise<SurrogateModel> {
  if (options.outputName !== undefined)
    throw new ModelError('outputName does not apply with engine onnx: the converted model has the layers model’s one output');
  let model: LayersModel | tf.GraphModel;
  let owned = true;
  if (options.model) {
    model = options.reinit === undefined ? options.model : await reinitLayersModel(options.model as LayersModel, options.reinit);
    owned = options.reinit !== undefined;
  } else if (options.reinit !== undefined) {
    const read = await readModelDir((options.path ?? options.dir) as string);
    if (read.kind === 'graph') throw new ModelError(`${read.file}: ${GRAPH_NOT_CONVERTED}`);
    model = await reinitFromTopology(read.artifacts.modelTopology as object, options.reinit);
  } else {
    model = (await loadTfjsModel((options.path ?? options.dir) as string)).model;
  }
  let bytes: Uint8Array;
  try {
    if (model instanceof tf.GraphModel) throw new ModelError(GRAPH_NOT_CONVERTED);
    bytes = layersModelToOnnx(model);
  } finally {
    // The converted graph holds its own copy of the weights; the TF.js model is not needed any more.
    if (owned) model.dispose();
  }
  return OnnxSurrogate.load(bytes, { output, chunkRows: options.chunkRows, inputShape: options.inputShape, threads: options.threads });
}

function choose(model: LayersModel | tf.GraphModel, options: TfjsSurrogateOptions, usePlan = true): Promise<SurrogateModel> {
  if (usePlan && !(model instanceof tf.GraphModel) && hasPlan(model)) return Promise.resolve(new Surrogate(model));
  return TfjsSurrogate.create(model, options);
}

async function ownedSurrogate(model: LayersModel | tf.GraphModel, options: TfjsSurrogateOptions, usePlan?: boolean): Promise<SurrogateModel> {
  try {
    return await choose(model, options, usePlan);
  } catch (error) {
    model.dispose();
    throw error;
  }
}
