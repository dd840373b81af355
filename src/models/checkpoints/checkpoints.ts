/**
 * Training checkpoints for HODA (Sadeghzadeh et al.): the victim's weights at `count` evenly spaced
 * points of its training (the last is the final model), recorded during training, saved beside the
 * model as checkpoints.bin and loaded back as models. What HODA makes of them (each query's hardness,
 * the benign calibration) is in hoda-hardness.ts.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { integerAtLeast, parseOptions } from '../../validation/index.js';
import { ModelFileError, ModelInputError } from '../errors.js';
import { tf, type LayersModel } from '../tfjs/tf.js';

export const CHECKPOINTS_FILE = 'checkpoints.bin';
export const DEFAULT_CHECKPOINTS = 11;

/** Weights (all variables, in the model's order) per checkpoint. */
export type CheckpointWeights = Float32Array[][];

/** An onStep hook for trainModel that keeps `count` evenly spaced snapshots of the weights. */
export function checkpointRecorder(
  model: LayersModel,
  count = DEFAULT_CHECKPOINTS,
): { onStep: (step: number, steps: number) => void; checkpoints: CheckpointWeights } {
  parseOptions(integerAtLeast(2), count, { error: ModelInputError, name: () => 'checkpoints' });
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
      if (shapes.length !== tensors)
        throw new ModelFileError(join(dir, CHECKPOINTS_FILE), `holds ${tensors} tensors per checkpoint; the model has ${shapes.length}`);
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
