/**
 * A small reader of NumPy's .npy files: format versions 1, 2 and 3 (the header length is a uint16
 * in v1, a uint32 after), little-endian or single-byte dtypes u1, i1, i4, i8, f4, f8, C order.
 * Every problem is an error naming the file: bad magic, unsupported dtype, Fortran order, a data
 * length that does not match the shape.
 */
import { DataFileError } from './errors.js';

export interface NpyArray {
  readonly shape: readonly number[];
  readonly dtype: NpyDtype;
  /** The values, as numbers (int64 read through BigInt; values beyond 2^53 lose precision). */
  readonly data: Uint8Array | Int8Array | Int32Array | Float32Array | Float64Array | Float64Array;
}

export type NpyDtype = 'u1' | 'i1' | 'i4' | 'i8' | 'f4' | 'f8';
const SIZES: Record<NpyDtype, number> = { u1: 1, i1: 1, i4: 4, i8: 8, f4: 4, f8: 8 };
const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

export function parseNpy(buffer: Uint8Array, file: string): NpyArray {
  if (buffer.byteLength < 10 || MAGIC.some((b, i) => buffer[i] !== b)) throw new DataFileError(file, 'not a .npy file (bad magic; expected \\x93NUMPY)');
  const major = buffer[6];
  if (major < 1 || major > 3) throw new DataFileError(file, `.npy format version ${major} is not supported (1, 2 or 3)`);
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const headerStart = major === 1 ? 10 : 12;
  if (buffer.byteLength < headerStart + headerLength) throw new DataFileError(file, 'the .npy header is cut short');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(buffer.subarray(headerStart, headerStart + headerLength));
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined)
    throw new DataFileError(file, `cannot read the .npy header ${JSON.stringify(header.trim())}`);
  if (fortran === 'True') throw new DataFileError(file, 'the array is in Fortran order; save it in C order (np.ascontiguousarray)');
  const match = /^([<|=])([uif])(\d)$/.exec(descr);
  const dtype = match ? (`${match[2]}${match[3]}` as NpyDtype) : undefined;
  if (!match || !dtype || !(dtype in SIZES) || (SIZES[dtype] > 1 && match[1] === '|')) {
    throw new DataFileError(file, `dtype "${descr}" is not supported; use uint8, float32, float64, int32 or int64, little-endian`);
  }
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw new DataFileError(file, `bad shape (${shapeText})`);
  const count = shape.reduce((a, b) => a * b, 1);
  const dataStart = headerStart + headerLength;
  const bytes = count * SIZES[dtype];
  if (buffer.byteLength - dataStart !== bytes)
    throw new DataFileError(file, `shape (${shape.join(', ')}) of ${dtype} needs ${bytes} bytes of data, the file holds ${buffer.byteLength - dataStart}`);
  // A copy: the typed array must start at a multiple of its element size.
  const raw = buffer.slice(dataStart, dataStart + bytes);
  const data =
    dtype === 'u1'
      ? raw
      : dtype === 'i1'
        ? new Int8Array(raw.buffer)
        : dtype === 'i4'
          ? new Int32Array(raw.buffer)
          : dtype === 'f4'
            ? new Float32Array(raw.buffer)
            : dtype === 'f8'
              ? new Float64Array(raw.buffer)
              : Float64Array.from(new BigInt64Array(raw.buffer), (v) => Number(v));
  return { shape, dtype, data };
}

/** A .npy file's bytes (v1 header, C order, little-endian): for tests and for exporting data. */
export function encodeNpy(data: Uint8Array | Float32Array | Float64Array | Int32Array | BigInt64Array, shape: readonly number[]): Uint8Array {
  const descr =
    data instanceof Uint8Array
      ? '|u1'
      : data instanceof Float32Array
        ? '<f4'
        : data instanceof Float64Array
          ? '<f8'
          : data instanceof Int32Array
            ? '<i4'
            : '<i8';
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += `${' '.repeat((64 - (total % 64)) % 64)}\n`;
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}
