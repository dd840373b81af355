/** Real images made with sharp for the image-input tests: solid colours, vertical stripes, bad files. */
import zlib from 'node:zlib';
import sharp from 'sharp';

export type Rgb = readonly [number, number, number];

/** A width × height RGB image whose columns are coloured by `colourOf(x)`. */
export function stripes(width: number, height: number, colourOf: (x: number) => Rgb): Buffer {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) raw.set(colourOf(x), (y * width + x) * 3);
  return raw;
}

export function encode(raw: Buffer, width: number, height: number, format: 'png' | 'jpeg', channels: 1 | 3 | 4 = 3): Promise<Buffer> {
  const image = sharp(raw, { raw: { width, height, channels } });
  return (format === 'png' ? image.png() : image.jpeg({ quality: 95 })).toBuffer();
}

export function solidPng(width: number, height: number, colour: Rgb): Promise<Buffer> {
  return encode(stripes(width, height, () => colour), width, height, 'png');
}

/** A true one-channel (grayscale) PNG. */
export function grayPng(width: number, height: number, level: number): Promise<Buffer> {
  return sharp(Buffer.alloc(width * height, level), { raw: { width, height, channels: 1 } }).toColourspace('b-w').png().toBuffer();
}

/** A valid PNG whose header (IHDR, checksum fixed) declares width × height: a decompression bomb's shape. */
export async function pngDeclaring(width: number, height: number): Promise<Buffer> {
  const png = Buffer.from(await solidPng(4, 4, [1, 2, 3]));
  // Signature (8), IHDR length (4), "IHDR" (4), width, height, ...; the CRC covers type + 13 data bytes.
  png.writeUInt32BE(width, 16);
  png.writeUInt32BE(height, 20);
  png.writeUInt32BE(zlib.crc32(png.subarray(12, 29)), 29);
  return png;
}

/** A PNG of seeded random pixels: it does not compress, so its size is about 3 × width × height bytes. */
export function noisePng(width: number, height: number, seed = 1): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  let state = seed >>> 0;
  for (let i = 0; i < raw.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    raw[i] = state >>> 24;
  }
  return encode(raw, width, height, 'png');
}

export const b64 = (bytes: Buffer): string => bytes.toString('base64');
