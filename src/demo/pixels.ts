/** The demo model's input convention: pixels in [0, 1]; integer datatypes carry 0..255 and are scaled. */
import type { InputRows } from '../server/protocols/index.js';

const INTEGER_TYPES = new Set(['UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64']);

export function pixelsInUnitRange(inputs: InputRows): InputRows {
  if (!inputs.datatype || !INTEGER_TYPES.has(inputs.datatype)) return inputs;
  const data = new Float32Array(inputs.data.length);
  for (let i = 0; i < data.length; i++) data[i] = inputs.data[i] / 255;
  return { rows: inputs.rows, cols: inputs.cols, data, datatype: 'FP32' };
}
