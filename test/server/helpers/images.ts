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
  return encode(
    stripes(width, height, () => colour),
    width,
    height,
    'png',
  );
}

/** A true one-channel (grayscale) PNG. */
export function grayPng(width: number, height: number, level: number): Promise<Buffer> {
  return sharp(Buffer.alloc(width * height, level), { raw: { width, height, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
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

/**
 * A real, valid width × height black RGB PNG, written by hand (sharp would take seconds to encode a
 * tall one): its rows deflate to almost nothing, so a 1 × 20,000,000 image is about 78 KB.
 */
export function blackPng(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const typed = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(typed));
    return Buffer.concat([length, typed, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bits per sample
  header[9] = 2; // RGB
  // Each row: filter byte 0, then width × 3 zero bytes.
  const pixels = zlib.deflateSync(Buffer.alloc(height * (1 + width * 3)), { level: 9 });
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', pixels),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Base64 text that passes the base64 and format checks (a PNG signature) but is no image: reading its header fails with 400. */
export const corruptPngText = (): string =>
  Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from('not a PNG header at all')]).toString('base64');
