/**
 * Models on disk without tfjs-node: a tf.io handler over node:fs that writes and reads the standard
 * layout (`model.json` + `weights.bin`), plus a small `meta.json` beside it. Every problem with a
 * file surfaces as a ModelFileError naming that file, never as an error from deep inside tfjs.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelFileError } from '../errors.js';
import { tf, type LayersModel } from './tf.js';

export const MODEL_FILE = 'model.json';
export const WEIGHTS_FILE = 'weights.bin';
export const META_FILE = 'meta.json';

const DTYPE_BYTES: Readonly<Record<string, number>> = { float32: 4, int32: 4, bool: 1 };

/** Writes `model.json` and `weights.bin` into `dir` (created when missing). */
export async function saveModel(model: LayersModel, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await model.save(fileSaveHandler(dir));
}

/** Reads a model written by saveModel (or by tfjs's own file:// handler with one weights file or several). */
export async function loadModel(dir: string): Promise<LayersModel> {
  const artifacts = await readArtifacts(dir);
  try {
    return await tf.loadLayersModel(tf.io.fromMemory(artifacts));
  } catch (error) {
    throw new ModelFileError(join(dir, MODEL_FILE), `not a loadable layers model (${error instanceof Error ? error.message : String(error)})`);
  }
}

function fileSaveHandler(dir: string): tf.io.IOHandler {
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      if (artifacts.modelTopology === undefined || artifacts.modelTopology instanceof ArrayBuffer) {
        throw new ModelFileError(join(dir, MODEL_FILE), 'only layers models with a JSON topology can be saved');
      }
      const weights = artifacts.weightData === undefined ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData);
      const modelJson: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: [{ paths: [`./${WEIGHTS_FILE}`], weights: artifacts.weightSpecs ?? [] }],
      };
      if (artifacts.trainingConfig) modelJson.trainingConfig = artifacts.trainingConfig;
      await writeFile(join(dir, WEIGHTS_FILE), new Uint8Array(weights));
      await writeFile(join(dir, MODEL_FILE), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
  };
}

/** Reads model.json and its weight files, checking each against the other. */
async function readArtifacts(dir: string): Promise<tf.io.ModelArtifacts> {
  const modelPath = join(dir, MODEL_FILE);
  const json = parseModelJson(await readOrExplain(modelPath), modelPath);
  const specs: tf.io.WeightsManifestEntry[] = [];
  const buffers: ArrayBuffer[] = [];
  for (const group of json.weightsManifest) {
    for (const path of group.paths) {
      const bytes = await readOrExplain(join(dir, path));
      buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
    }
    specs.push(...group.weights);
  }
  const weightData = tf.io.CompositeArrayBuffer.join(buffers);
  const expected = specs.reduce((sum, spec) => sum + expectedBytes(spec, modelPath), 0);
  if (weightData.byteLength !== expected) {
    const files = json.weightsManifest.flatMap((g) => g.paths);
    throw new ModelFileError(
      join(dir, files[0] ?? WEIGHTS_FILE),
      `holds ${weightData.byteLength} bytes of weights but ${MODEL_FILE} describes ${expected} (weight files: ${files.join(', ')})`,
    );
  }
  return {
    modelTopology: json.modelTopology,
    format: json.format,
    generatedBy: json.generatedBy,
    convertedBy: json.convertedBy,
    trainingConfig: json.trainingConfig,
    weightSpecs: specs,
    weightData,
  };
}

/** Reads a model file; a missing or unreadable one is a ModelFileError naming it. */
export async function readOrExplain(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ModelFileError(file, code === 'ENOENT' ? 'file not found' : `cannot be read (${code ?? String(error)})`);
  }
}

function parseModelJson(bytes: Buffer, file: string): tf.io.ModelJSON {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new ModelFileError(file, `is not valid JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  const json = value as Partial<tf.io.ModelJSON> | null;
  if (json === null || typeof json !== 'object' || typeof json.modelTopology !== 'object' || json.modelTopology === null) {
    throw new ModelFileError(file, 'has no modelTopology object: not a tfjs layers model');
  }
  if (!Array.isArray(json.weightsManifest) || !json.weightsManifest.every((g) => Array.isArray(g?.paths) && Array.isArray(g?.weights))) {
    throw new ModelFileError(file, 'has no valid weightsManifest (a list of {paths, weights})');
  }
  return json as tf.io.ModelJSON;
}

function expectedBytes(spec: tf.io.WeightsManifestEntry, file: string): number {
  const bytes = DTYPE_BYTES[spec.dtype];
  if (bytes === undefined || spec.quantization) {
    throw new ModelFileError(file, `weight ${spec.name} has dtype ${spec.dtype}${spec.quantization ? ' (quantized)' : ''}, which this loader does not read`);
  }
  return spec.shape.reduce((a, b) => a * b, 1) * bytes;
}

/** What the `train` command records beside a model. Free-form beyond these fields. */
export interface ModelMeta {
  readonly dataset?: string;
  readonly arch?: string;
  readonly classes?: number;
  readonly inputShape?: readonly number[];
  readonly testAccuracy?: number;
  readonly backend?: string;
  readonly [key: string]: unknown;
}

export async function writeModelMeta(dir: string, meta: ModelMeta): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, META_FILE), `${JSON.stringify(meta, null, 2)}\n`);
}

/** The model's meta.json, or undefined when there is none. A corrupt one is an error naming it. */
export async function readModelMeta(dir: string): Promise<ModelMeta | undefined> {
  const file = join(dir, META_FILE);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModelFileError(file, `cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  try {
    const meta = JSON.parse(bytes.toString('utf8')) as unknown;
    if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) throw new Error('not a JSON object');
    return meta as ModelMeta;
  } catch (error) {
    throw new ModelFileError(file, `is not a valid meta file (${error instanceof Error ? error.message : String(error)})`);
  }
}
