/** Shared set-up for the models tests: the backend (MSD_BACKEND picks wasm or cpu) and tiny models. */
import assert from 'node:assert/strict';
import { createModel, initBackend, tf, type LayersModel } from '../../src/models/index.js';

export async function setUpBackend(): Promise<string> {
  const info = await initBackend({ log: () => {} });
  return info.name;
}

/** The tiny MLP of the tests: 16 inputs, 8 hidden units, 3 classes. */
export function tinyMlp(seed = 1): LayersModel {
  return createModel({ arch: 'mlp', inputShape: [16], classes: 3, seed, hidden: [8] });
}

/** A tiny LeNet: 12×12×1 images, 2 and 3 channels, one hidden dense layer of 5, 3 classes. */
export function tinyLenet(seed = 2): LayersModel {
  return createModel({ arch: 'lenet', inputShape: [12, 12, 1], classes: 3, seed, filters: [2, 3], hidden: [5] });
}

/** Deterministic pseudo-random inputs in [-1, 1]. */
export function inputs(rows: number, width: number, salt = 0): Float32Array {
  const out = new Float32Array(rows * width);
  for (let i = 0; i < out.length; i++) out[i] = Math.sin(i * 12.9898 + salt * 78.233) * 0.999;
  return out;
}

/** Runs `fn` and checks that it leaves the tensor count as it found it. */
export async function withoutLeaks<T>(fn: () => T | Promise<T>): Promise<T> {
  const before = tf.memory().numTensors;
  const result = await fn();
  assert.equal(tf.memory().numTensors, before, 'tensor count changed: a tensor leaked');
  return result;
}
