/**
 * The IDX format of the original MNIST files: a big-endian header (magic 0x0000 08 NN, where NN is
 * the number of dimensions, then one uint32 per dimension) followed by unsigned bytes.
 */

export interface IdxArray {
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

const UNSIGNED_BYTE = 0x08;

/** Parses an IDX buffer of unsigned bytes. `file` names the source in errors. */
export function parseIdx(buffer: Uint8Array, file: string): IdxArray {
  if (buffer.byteLength < 4) throw new Error(`${file}: too short for an IDX header (${buffer.byteLength} bytes)`);
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  if (view.getUint16(0) !== 0 || view.getUint8(2) !== UNSIGNED_BYTE) {
    throw new Error(`${file}: not an IDX file of unsigned bytes (magic 0x${view.getUint32(0).toString(16).padStart(8, '0')})`);
  }
  const dims = view.getUint8(3);
  const headerBytes = 4 + dims * 4;
  if (dims === 0 || buffer.byteLength < headerBytes)
    throw new Error(`${file}: IDX header declares ${dims} dimensions but the file is ${buffer.byteLength} bytes`);
  const shape: number[] = [];
  for (let d = 0; d < dims; d++) shape.push(view.getUint32(4 + d * 4));
  const count = shape.reduce((a, b) => a * b, 1);
  if (buffer.byteLength - headerBytes !== count) {
    throw new Error(`${file}: shape [${shape.join(', ')}] needs ${count} bytes of data, the file holds ${buffer.byteLength - headerBytes}`);
  }
  return { shape, data: buffer.subarray(headerBytes) };
}
