/**
 * Reads any TF.js model as artifacts, without tfjs-node: a directory holding `model.json` with its
 * weight files (layers or graph format, quantized weights included), a model's JSON file by any name
 * (`<name>.json`, as tfjs-converter writes them; its weight files are named in its manifest,
 * relative to the JSON's folder), or the browserify bundles nsfwjs ships (`model.min.js` exporting
 * the model.json object, one `<shard>.min.js` per weight file exporting its bytes as base64), given
 * as their directory or the bundle's file. A bundle is JavaScript: it is evaluated in an empty
 * node:vm context (no require, no process), only to read the value it exports.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { ModelFileError } from '../errors.js';
import { META_FILE, readOrExplain } from './io.js';
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

/** What a model path names: an ONNX file, or a TF.js model (a directory, a JSON file, a bundle). */
export type ModelPathKind = 'onnx' | 'tfjs';

/**
 * Whether `path` names an ONNX model (by its extension, or for a file of another name by its first
 * bytes: an ONNX ModelProto starts with field 1, ir_version, a small varint, then another field) or
 * a TF.js model (a directory, a `.json` or `.js` file, or a file starting with `{`). Throws
 * ModelFileError for a missing path or a file that is neither.
 */
export async function modelPathKind(path: string): Promise<ModelPathKind> {
  if (path.toLowerCase().endsWith('.onnx')) return 'onnx';
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ModelFileError(
      path,
      code === 'ENOENT' ? 'not found (give a TF.js model’s JSON file or its directory, or an ONNX file)' : `cannot be read (${code ?? String(error)})`,
    );
  }
  if (info.isDirectory() || /\.(json|js)$/i.test(path)) return 'tfjs';
  const head = await firstBytes(path, 16);
  const text = Buffer.from(head).toString('latin1').trimStart();
  if (text.startsWith('{')) return 'tfjs';
  if (looksLikeOnnx(head)) return 'onnx';
  throw new ModelFileError(path, 'is neither a TF.js model (a JSON file, or a directory holding model.json) nor an ONNX model');
}

/** ONNX's "magic": ir_version (field 1, varint, tag 0x08) of 1..127 first, then a field tag of another small field. */
export function looksLikeOnnx(head: Uint8Array): boolean {
  if (head.length < 3 || head[0] !== 0x08 || head[1] === 0 || head[1] >= 0x80) return false;
  const field = head[2] >> 3;
  const wire = head[2] & 7;
  return field >= 2 && field <= 20 && (wire === 0 || wire === 2);
}

async function firstBytes(path: string, count: number): Promise<Uint8Array> {
  const handle = await open(path, 'r').catch((error: NodeJS.ErrnoException) => {
    throw new ModelFileError(path, `cannot be read (${error.code ?? String(error)})`);
  });
  try {
    const buffer = new Uint8Array(count);
    const { bytesRead } = await handle.read(buffer, 0, count, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/**
 * Reads a TF.js model: a directory (its model.json, else model.min.js), a model's JSON file by any
 * name, or a bundle's `.js` file; weight files are read relative to the model file's folder. Throws
 * ModelFileError naming the file at fault.
 */
export async function readModelDir(path: string): Promise<ModelDirArtifacts> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ModelFileError(
      path,
      code === 'ENOENT' ? 'not found (give a TF.js model’s JSON file or its directory)' : `cannot be read (${code ?? String(error)})`,
    );
  }
  let dir: string;
  let file: string;
  let bundle: boolean;
  if (info.isDirectory()) {
    let names: string[];
    try {
      names = await readdir(path);
    } catch (error) {
      throw new ModelFileError(path, `cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
    dir = path;
    bundle = !names.includes('model.json') && names.includes(BUNDLE_FILE);
    file = join(dir, bundle ? BUNDLE_FILE : 'model.json');
    if (!bundle && !names.includes('model.json')) {
      // No model.json: a converter's `<name>.json` when it is the only JSON file (meta.json aside).
      const jsons = names.filter((n) => n.toLowerCase().endsWith('.json') && n !== META_FILE).sort();
      if (jsons.length === 1) file = join(dir, jsons[0]);
      else if (jsons.length > 1)
        throw new ModelFileError(path, `holds no model.json and several JSON files (${jsons.join(', ')}): give the model's JSON file itself`);
    }
  } else {
    // A file: the model's JSON by any name (tfjs-converter's `<name>.json`), or a bundle's `.js`.
    dir = dirname(path);
    file = path;
    bundle = /\.js$/i.test(basename(path));
  }
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

/** Bytes a manifest entry takes in the weight data (its quantized size when quantized). */
export function specBytes(spec: tf.io.WeightsManifestEntry, file: string): number {
  const dtype = spec.quantization?.dtype ?? spec.dtype;
  const bytes = DTYPE_BYTES[dtype];
  if (bytes === undefined) throw new ModelFileError(file, `weight ${spec.name} is stored as ${dtype}, which this loader does not read`);
  return spec.shape.reduce((a, b) => a * b, 1) * bytes;
}

/** Loads a TF.js model (a directory, a JSON file by any name, a bundle) as a LayersModel or GraphModel, whichever it holds. */
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
