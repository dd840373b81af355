/**
 * Reads any TF.js model directory as artifacts, without tfjs-node: `model.json` with its weight
 * files (layers or graph format, quantized weights included), or the browserify bundles nsfwjs
 * ships (`model.min.js` exporting the model.json object, one `<shard>.min.js` per weight file
 * exporting its bytes as base64). A bundle is JavaScript: it is evaluated in an empty node:vm
 * context (no require, no process), only to read the value it exports.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { ModelFileError } from './errors.js';
import { readOrExplain } from './io.js';
import { tf } from './tf.js';

export const BUNDLE_FILE = 'model.min.js';

export interface ModelDirArtifacts {
  readonly artifacts: tf.io.ModelArtifacts;
  /** 'graph' for tfjs-converter graph models, 'layers' for layers models. */
  readonly kind: 'layers' | 'graph';
  /** The file the topology came from (for messages). */
  readonly file: string;
}


/** The value a CommonJS/UMD bundle exports, evaluated with nothing but `module` and `exports` in scope. */
function bundleExports(source: string, file: string): unknown {
  const module = { exports: {} as unknown };
  try {
    runInNewContext(source, { module, exports: module.exports }, { filename: file, timeout: 10_000 });
  } catch (error) {
    throw new ModelFileError(file, `is not a model bundle that evaluates on its own (${error instanceof Error ? error.message : String(error)})`);
  }
  const value = module.exports as { default?: unknown };
  const exported = value && typeof value === 'object' && 'default' in value ? value.default : value;
  // A JSON round trip leaves plain data of this realm (the bundle's objects have the vm context's prototypes).
  return typeof exported === 'string' ? exported : JSON.parse(JSON.stringify(exported ?? null));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Reads `dir` (model.json, else model.min.js). Throws ModelFileError naming the file at fault. */
export async function readModelDir(dir: string): Promise<ModelDirArtifacts> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ModelFileError(dir, code === 'ENOENT' ? 'directory not found' : code === 'ENOTDIR' ? 'is not a directory (for an ONNX file use --surrogate-onnx)' : `cannot be read (${code ?? String(error)})`);
  }
  const bundle = !names.includes('model.json') && names.includes(BUNDLE_FILE);
  const file = join(dir, bundle ? BUNDLE_FILE : 'model.json');
  let json: unknown;
  if (bundle) json = bundleExports((await readOrExplain(file)).toString('utf8'), file);
  else {
    try {
      json = JSON.parse((await readOrExplain(file)).toString('utf8'));
    } catch (error) {
      if (error instanceof ModelFileError) throw error;
      throw new ModelFileError(file, `is not valid JSON (${error instanceof Error ? error.message : String(error)})`);
    }
  }
  if (!isObject(json) || !isObject(json.modelTopology)) throw new ModelFileError(file, 'has no modelTopology object: not a TF.js model');
  const manifest = json.weightsManifest;
  if (!Array.isArray(manifest) || !manifest.every((g) => isObject(g) && Array.isArray(g.paths) && Array.isArray(g.weights))) {
    throw new ModelFileError(file, 'has no valid weightsManifest (a list of {paths, weights})');
  }
  const groups = manifest as tf.io.WeightsManifestConfig;
  const buffers: Uint8Array[] = [];
  for (const group of groups) {
    for (const path of group.paths) {
      if (!bundle) {
        buffers.push(await readOrExplain(join(dir, path)));
        continue;
      }
      const shard = join(dir, `${path.replace(/^\.\//, '')}.min.js`);
      const base64 = bundleExports((await readOrExplain(shard)).toString('utf8'), shard);
      if (typeof base64 !== 'string') throw new ModelFileError(shard, 'does not export the weights as a base64 string');
      buffers.push(Buffer.from(base64, 'base64'));
    }
  }
  const weightSpecs = groups.flatMap((g) => g.weights);
  const expected = weightSpecs.reduce((sum, spec) => sum + specBytes(spec, file), 0);
  const total = buffers.reduce((sum, b) => sum + b.byteLength, 0);
  if (total !== expected) throw new ModelFileError(file, `describes ${expected} bytes of weights but its weight files hold ${total}`);
  const weightData = tf.io.CompositeArrayBuffer.join(buffers.map((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer));
  const topology = json.modelTopology;
  const kind = json.format === 'graph-model' || Array.isArray(topology.node) ? 'graph' : 'layers';
  return {
    kind,
    file,
    artifacts: {
      modelTopology: topology as tf.io.ModelArtifacts['modelTopology'],
      format: json.format as string | undefined,
      generatedBy: json.generatedBy as string | undefined,
      convertedBy: json.convertedBy as string | null | undefined,
      signature: json.signature as object | undefined,
      userDefinedMetadata: json.userDefinedMetadata as tf.io.ModelArtifacts['userDefinedMetadata'],
      weightSpecs,
      weightData,
    },
  };
}

const DTYPE_BYTES: Readonly<Record<string, number>> = { float32: 4, int32: 4, bool: 1, uint8: 1, float16: 2 };

function specBytes(spec: tf.io.WeightsManifestEntry, file: string): number {
  const dtype = spec.quantization?.dtype ?? spec.dtype;
  const bytes = DTYPE_BYTES[dtype];
  if (bytes === undefined) throw new ModelFileError(file, `weight ${spec.name} is stored as ${dtype}, which this loader does not read`);
  return spec.shape.reduce((a, b) => a * b, 1) * bytes;
}

/** Loads a directory as a LayersModel or GraphModel, whichever it holds. */
export async function loadTfjsModel(dir: string): Promise<{ model: tf.LayersModel | tf.GraphModel; artifacts: ModelDirArtifacts }> {
  const read = await readModelDir(dir);
  try {
    const handler = tf.io.fromMemory(read.artifacts);
    const model = read.kind === 'graph' ? await tf.loadGraphModel(handler) : await tf.loadLayersModel(handler);
    return { model, artifacts: read };
  } catch (error) {
    throw new ModelFileError(read.file, `not a loadable ${read.kind} model (${error instanceof Error ? error.message : String(error)})`);
  }
}
