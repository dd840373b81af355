/**
 * A compact binary cache of a parsed dataset: one file holding a small JSON header and the pixels
 * and labels as bytes, so that loading takes one read and one pass to scale pixels to [0, 1].
 * The header carries a signature of the source files; a stale or damaged cache is rebuilt.
 */
import { mkdir, open, rename, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

const MAGIC = 'MSDDATA1';

export interface CachedSplit {
  readonly pixels: Uint8Array;
  readonly labels: Uint8Array;
  readonly rows: number;
}

export interface CachedDataset {
  readonly signature: string;
  readonly width: number;
  readonly train: CachedSplit;
  readonly test: CachedSplit;
}

interface Header {
  signature: string;
  width: number;
  trainRows: number;
  testRows: number;
}

export async function writeCache(file: string, dataset: CachedDataset): Promise<void> {
  const header: Header = { signature: dataset.signature, width: dataset.width, trainRows: dataset.train.rows, testRows: dataset.test.rows };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(json.byteLength);
  await mkdir(dirname(file), { recursive: true });
  // Write then rename, so a reader never sees half a file.
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(
    temporary,
    Buffer.concat([Buffer.from(MAGIC, 'ascii'), length, json, dataset.train.pixels, dataset.test.pixels, dataset.train.labels, dataset.test.labels]),
  );
  await rename(temporary, file);
}

export interface LoadedSplit {
  /** rows × width values in [0, 1]. */
  readonly x: Float32Array;
  readonly labels: Uint8Array;
  readonly rows: number;
}

export interface LoadedDataset {
  readonly width: number;
  readonly train: LoadedSplit;
  readonly test: LoadedSplit;
}

const PIXEL_SCALE = Float32Array.from({ length: 256 }, (_, v) => v / 255);
const CHUNK_BYTES = 1 << 20;

/** Pixels as bytes 0..255 scaled to [0, 1]. */
export function scalePixels(pixels: Uint8Array, out = new Float32Array(pixels.length), offset = 0): Float32Array {
  for (let i = 0; i < pixels.length; i++) out[offset + i] = PIXEL_SCALE[pixels[i]];
  return out;
}

/**
 * The cached dataset with pixels scaled to [0, 1], or undefined when the file is missing, damaged or
 * made from other sources. Pixels are read in small chunks and scaled straight into the result, so
 * the only large allocation is the result itself.
 */
export async function readCache(file: string, signature: string, limit: { train?: number; test?: number } = {}): Promise<LoadedDataset | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = (await handle.stat()).size;
    const prefix = Buffer.alloc(12);
    if (size < 12 || (await handle.read(prefix, 0, 12, 0)).bytesRead !== 12 || prefix.toString('ascii', 0, 8) !== MAGIC) return undefined;
    const jsonLength = prefix.readUInt32LE(8);
    if (12 + jsonLength > size) return undefined;
    const json = Buffer.alloc(jsonLength);
    await handle.read(json, 0, jsonLength, 12);
    let header: Header;
    try {
      header = JSON.parse(json.toString('utf8')) as Header;
    } catch {
      return undefined;
    }
    if (header.signature !== signature) return undefined;
    const { width, trainRows, testRows } = header;
    const start = 12 + jsonLength;
    if (size !== start + (trainRows + testRows) * (width + 1)) return undefined;
    const labelsStart = start + (trainRows + testRows) * width;
    const readSplit = async (first: number, total: number, wanted: number | undefined): Promise<LoadedSplit | undefined> => {
      const rows = Math.max(0, Math.min(total, Math.floor(wanted ?? total)));
      const labels = Buffer.alloc(rows);
      if (rows > 0 && (await handle.read(labels, 0, rows, labelsStart + first)).bytesRead !== rows) return undefined;
      const x = new Float32Array(rows * width);
      const chunk = Buffer.alloc(Math.min(CHUNK_BYTES, Math.max(1, x.length)));
      for (let done = 0; done < x.length; ) {
        const { bytesRead } = await handle.read(chunk, 0, Math.min(chunk.length, x.length - done), start + first * width + done);
        if (bytesRead === 0) return undefined;
        scalePixels(chunk.subarray(0, bytesRead), x, done);
        done += bytesRead;
      }
      return { x, labels: new Uint8Array(labels.buffer, labels.byteOffset, rows), rows };
    };
    const train = await readSplit(0, trainRows, limit.train);
    const test = await readSplit(trainRows, testRows, limit.test);
    return train && test ? { width, train, test } : undefined;
  } finally {
    await handle.close();
  }
}
