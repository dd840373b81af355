/** The parts of a defense's context that need no network (input keys, messages): the serving layer uses them without loading TensorFlow.js. */
import { createHash } from 'node:crypto';
import { ModelInputError } from './errors.js';

/** One SHA-256 (hex) per input row, over the row's float32 bytes: equal inputs, equal keys. */
export function inputKeys(inputs: Float32Array, rows: number): string[] {
  if (!Number.isInteger(rows) || rows < 1 || inputs.length % rows !== 0) {
    throw new ModelInputError(`inputs hold ${inputs.length} values, which is not ${rows} equal rows`);
  }
  const width = inputs.length / rows;
  const bytes = new Uint8Array(inputs.buffer, inputs.byteOffset, inputs.byteLength);
  const keys: string[] = new Array(rows);
  for (let r = 0; r < rows; r++) {
    keys[r] = createHash('sha256')
      .update(bytes.subarray(r * width * 4, (r + 1) * width * 4))
      .digest('hex');
  }
  return keys;
}

/** What to tell an operator whose surrogate cannot give Gram matrices (ONNX, GraphModel). */
export function nonDifferentiableMessage(): string {
  return 'mad with jacobian=full needs a differentiable surrogate (a TF.js layers model), but this one is forward-only (ONNX or a TF.js graph model); use mad with jacobian=last-layer, or a layers-model surrogate (--surrogate PATH)';
}
