/**
 * Training checkpoints for HODA (Sadeghzadeh et al.): the victim's weights at `count` evenly spaced
 * points of its training (the last is the final model), saved beside the model, and the hardness of
 * each query: the first checkpoint from which every later one gives the final label.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { argmaxRows } from '../defenses/index.js';
import { calibrateHoda, hardnessFromLabels, type HodaCalibration } from '../detection/hoda.js';
import { ModelFileError } from './errors.js';
import { predictClasses } from './predict.js';
import { permutation, seededRandom } from './random.js';
import type { SurrogateModel } from './surrogate-model.js';
import { tf, type LayersModel } from './tf.js';

export const CHECKPOINTS_FILE = 'checkpoints.bin';
export const DEFAULT_CHECKPOINTS = 11;

/** Weights (all variables, in the model's order) per checkpoint. */
export type CheckpointWeights = Float32Array[][];

/** An onStep hook for trainModel that keeps `count` evenly spaced snapshots of the weights. */
export function checkpointRecorder(model: LayersModel, count = DEFAULT_CHECKPOINTS): { onStep: (step: number, steps: number) => void; checkpoints: CheckpointWeights } {
  if (!Number.isInteger(count) || count < 2) throw new RangeError(`checkpoints must be an integer ≥ 2, got ${count}`);
  const checkpoints: CheckpointWeights = [];
  return {
    checkpoints,
    onStep(step, steps) {
      // Checkpoint k (1..count) after step round(k · steps / count); with fewer steps than checkpoints, some repeat.
      while (checkpoints.length < count && step >= Math.max(1, Math.round(((checkpoints.length + 1) * steps) / count))) {
        checkpoints.push(model.getWeights().map((w) => w.dataSync().slice() as Float32Array));
      }
    },
  };
}

/** checkpoints.bin: uint32 count, uint32 tensors, then the float32 values of each checkpoint's tensors. */
export async function saveCheckpoints(dir: string, checkpoints: CheckpointWeights): Promise<void> {
  const tensors = checkpoints[0]?.length ?? 0;
  const values = checkpoints.reduce((n, c) => n + c.reduce((m, w) => m + w.length, 0), 0);
  const buffer = new ArrayBuffer(8 + 4 * values);
  const header = new Uint32Array(buffer, 0, 2);
  header[0] = checkpoints.length;
  header[1] = tensors;
  let offset = 8;
  for (const checkpoint of checkpoints) {
    for (const w of checkpoint) {
      new Float32Array(buffer, offset, w.length).set(w);
      offset += 4 * w.length;
    }
  }
  await writeFile(join(dir, CHECKPOINTS_FILE), new Uint8Array(buffer));
}

/** The checkpoint models (clones of `model` with the saved weights), or undefined when none are saved. Dispose them. */
export async function loadCheckpointModels(dir: string, load: () => Promise<LayersModel>): Promise<LayersModel[] | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(join(dir, CHECKPOINTS_FILE));
  } catch {
    return undefined;
  }
  const aligned = new Uint8Array(bytes).buffer;
  const [count, tensors] = new Uint32Array(aligned, 0, 2);
  const models: LayersModel[] = [];
  let offset = 8;
  try {
    for (let c = 0; c < count; c++) {
      const model = await load();
      models.push(model);
      const shapes = model.getWeights().map((w) => w.shape);
      if (shapes.length !== tensors) throw new ModelFileError(join(dir, CHECKPOINTS_FILE), `holds ${tensors} tensors per checkpoint; the model has ${shapes.length}`);
      const weights = shapes.map((shape) => {
        const size = shape.reduce((a, b) => a * b, 1);
        if (offset + 4 * size > aligned.byteLength) throw new ModelFileError(join(dir, CHECKPOINTS_FILE), 'is truncated');
        const t = tf.tensor(new Float32Array(aligned, offset, size), shape);
        offset += 4 * size;
        return t;
      });
      model.setWeights(weights);
      tf.dispose(weights);
    }
  } catch (error) {
    for (const m of models) m.dispose();
    throw error;
  }
  return models;
}

/** Per row, the hardness from each checkpoint's top-1 labels (labels[checkpoint][row]). */
function hardnessOfLabels(labels: readonly ArrayLike<number>[], rows: number): Int8Array {
  const hardness = new Int8Array(rows);
  const row = new Int32Array(labels.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < labels.length; c++) row[c] = labels[c][r];
    hardness[r] = hardnessFromLabels(row);
  }
  return hardness;
}

/** Per row, the hardness (0 .. checkpoints − 1) from the checkpoints' top-1 labels. */
export function checkpointHardness(models: readonly LayersModel[], inputs: Float32Array, rows: number): Int8Array {
  return hardnessOfLabels(models.map((m) => predictClasses(m, inputs, rows)), rows);
}

/**
 * HODA's benign calibration from held-out images of the victim's own distribution: their hardness
 * in `orders` seeded orders, so the benign maximum distance is taken over many chunks (a threshold
 * from few chunks lets about one benign chunk in (chunks + 1) through).
 */
export function calibrateHodaOnHeldOut(models: readonly LayersModel[], x: Float32Array, rows: number, options: HeldOutCalibrationOptions = {}): HodaCalibration {
  return calibrationFromHardness(checkpointHardness(models, x, rows), models.length, options);
}

export interface HeldOutCalibrationOptions {
  /** Seed of the orders (default fixed). */
  seed?: number;
  /** How many seeded orders of the held-out rows make the benign sequences (default 20). */
  orders?: number;
  /** Chunk lengths HODA tests at (default 100 and 1000; those longer than the data are dropped). */
  lengths?: readonly number[];
}

function calibrationFromHardness(hardness: Int8Array, checkpoints: number, options: HeldOutCalibrationOptions): HodaCalibration {
  const rows = hardness.length;
  const random = seededRandom(options.seed ?? 0x40da);
  const sequences = Array.from({ length: options.orders ?? 20 }, () => Int8Array.from(permutation(rows, random), (r) => hardness[r]));
  return calibrateHoda(sequences, { bins: checkpoints, lengths: (options.lengths ?? [100, 1000]).filter((l) => l <= rows) });
}

/**
 * The hardness per row from checkpoints given as surrogates of any kind (TF.js, ONNX, in worker
 * threads), in training order, the last being the final model: for owners whose checkpoints are
 * separate model files rather than this project's checkpoints.bin.
 */
export async function surrogateHardness(models: readonly SurrogateModel[], inputs: Float32Array, rows: number): Promise<Int8Array> {
  return hardnessOfLabels((await Promise.all(models.map((m) => m.probsAsync(inputs, rows)))).map(argmaxRows), rows);
}

/** calibrateHodaOnHeldOut for checkpoints given as surrogates; the held-out rows go through in chunks of `chunkRows` (default 256). */
export async function calibrateHodaWithSurrogates(models: readonly SurrogateModel[], x: Float32Array, rows: number, options: HeldOutCalibrationOptions & { chunkRows?: number } = {}): Promise<HodaCalibration> {
  const width = x.length / rows;
  const chunk = options.chunkRows ?? 256;
  const hardness = new Int8Array(rows);
  for (let start = 0; start < rows; start += chunk) {
    const n = Math.min(chunk, rows - start);
    hardness.set(await surrogateHardness(models, x.subarray(start * width, (start + n) * width), n), start);
  }
  return calibrationFromHardness(hardness, models.length, options);
}
