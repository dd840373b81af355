/**
 * HODA's glue (Sadeghzadeh et al.): the hardness of each query from the victim's training checkpoints
 * (the first checkpoint from which every later one gives the final label) and HODA's benign
 * calibration from held-out rows. The checkpoints come as this project's checkpoint models
 * (checkpoints.ts) or as surrogates of any kind; the detector itself (src/detection/hoda.ts) stays
 * pure and sees only the hardness values.
 */
import { argmaxRows } from '../../defenses/index.js';
import { calibrateHoda, hardnessFromLabels, type HodaCalibration } from '../../detection/hoda.js';
import { z } from 'zod';
import { integerAtLeast, parseOptions, positiveInteger } from '../../validation/index.js';
import { ModelInputError } from '../errors.js';
import { permutation, seededRandom } from '../random.js';
import type { SurrogateModel } from '../surrogate-model.js';
import { predictClasses } from '../tfjs/plan/predict.js';
import type { LayersModel } from '../tfjs/tf.js';

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
  return hardnessOfLabels(
    models.map((m) => predictClasses(m, inputs, rows)),
    rows,
  );
}

/**
 * HODA's benign calibration from held-out images of the victim's own distribution: their hardness
 * in `orders` seeded orders, so the benign maximum distance is taken over many chunks (a threshold
 * from few chunks lets about one benign chunk in (chunks + 1) through).
 */
export function calibrateHodaOnHeldOut(
  models: readonly LayersModel[],
  x: Float32Array,
  rows: number,
  options: HeldOutCalibrationOptions = {},
): HodaCalibration {
  parseOptions(heldOutSchema, options, style);
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

const heldOutShape = {
  seed: integerAtLeast(0, 'an integer seed in 0..4294967295', 0xffffffff).optional(),
  orders: positiveInteger().optional(),
  lengths: z.array(positiveInteger('a positive integer (a chunk length)'), { error: 'a list of chunk lengths, e.g. [100, 1000]' }).optional(),
} satisfies Record<keyof HeldOutCalibrationOptions, z.ZodType>;

const heldOutSchema = z.strictObject(heldOutShape, { error: 'an object, e.g. { orders: 20, lengths: [100, 1000] }' });
const withSurrogatesSchema = z.strictObject(
  { ...heldOutShape, chunkRows: positiveInteger().optional() },
  { error: 'an object, e.g. { orders: 20, lengths: [100, 1000], chunkRows: 256 }' },
);
const style = { error: ModelInputError };

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
export async function calibrateHodaWithSurrogates(
  models: readonly SurrogateModel[],
  x: Float32Array,
  rows: number,
  options: HeldOutCalibrationOptions & { chunkRows?: number } = {},
): Promise<HodaCalibration> {
  parseOptions(withSurrogatesSchema, options, style);
  return calibrationFromHardness(await surrogateHardnessInChunks(models, x, rows, options.chunkRows), models.length, options);
}

/** surrogateHardness of many rows, `chunkRows` (default 256) at a time: the held-out rows of a calibration. */
export async function surrogateHardnessInChunks(models: readonly SurrogateModel[], x: Float32Array, rows: number, chunkRows = 256): Promise<Int8Array> {
  const width = x.length / rows;
  const hardness = new Int8Array(rows);
  for (let start = 0; start < rows; start += chunkRows) {
    const n = Math.min(chunkRows, rows - start);
    hardness.set(await surrogateHardness(models, x.subarray(start * width, (start + n) * width), n), start);
  }
  return hardness;
}

/** HODA's benign calibration from the held-out rows' hardness (0 .. checkpoints − 1 per row), as calibrateHodaOnHeldOut computes it. */
export function calibrateHodaFromHardness(hardness: Int8Array, checkpoints: number, options: HeldOutCalibrationOptions = {}): HodaCalibration {
  parseOptions(heldOutSchema, options, style);
  return calibrationFromHardness(hardness, checkpoints, options);
}
