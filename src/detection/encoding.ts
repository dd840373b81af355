/**
 * Typed arrays inside a JSON state: base64 of their little-endian bytes (every platform Node runs on
 * in practice; the state is also read back on the same kind of host). Decoding copies, so the result
 * is aligned and independent of the string.
 */

export function encodeFloat32(values: Float32Array): string {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');
}

export function decodeFloat32(text: string): Float32Array {
  const bytes = Buffer.from(text, 'base64');
  const out = new Float32Array(bytes.length >> 2);
  new Uint8Array(out.buffer).set(bytes.subarray(0, out.length * 4));
  return out;
}

export function encodeUint16(values: Uint16Array): string {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');
}

export function decodeUint16(text: string): Uint16Array {
  const bytes = Buffer.from(text, 'base64');
  const out = new Uint16Array(bytes.length >> 1);
  new Uint8Array(out.buffer).set(bytes.subarray(0, out.length * 2));
  return out;
}

export function encodeUint8(values: Uint8Array): string {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');
}

export function decodeUint8(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'base64'));
}

/** Length of the base64 text of `bytes` bytes. */
export function base64Length(bytes: number): number {
  return 4 * Math.ceil(bytes / 3);
}
