/**
 * Decoding one encoded image with sharp (libvips, decoding on libuv's thread pool, so the event loop
 * keeps running), resized to the declared size, as RGB bytes: first its header alone (cheap, checked
 * against the side and pixel limits), then its pixels. Every way an image can be bad is the client's
 * fault and answered 400 naming the problem. sharp is imported on first use: servers and tools that
 * never see an image never load it.
 */
import type { Sharp, SharpOptions } from 'sharp';
import { RequestFormatError } from '../errors.js';
import type { ResizeMode } from './options.js';

type SharpFactory = (input: Buffer, options?: SharpOptions) => Sharp;
let sharpLoaded: Promise<SharpFactory> | undefined;

function loadSharp(): Promise<SharpFactory> {
  sharpLoaded ??= import('sharp').then((module) => module.default as unknown as SharpFactory);
  return sharpLoaded;
}

export type ImageFormat = 'jpeg' | 'png' | 'webp';

/**
 * The format from the first bytes. Only JPEG, PNG and WebP reach the decoder: libvips also reads SVG,
 * PDF, TIFF, HEIF and more, each a parser (and for SVG, a renderer) that an image API does not need to expose.
 */
export function sniffFormat(bytes: Buffer): ImageFormat | undefined {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  if (bytes.length >= 8 && bytes.readUInt32BE(0) === 0x89504e47 && bytes.readUInt32BE(4) === 0x0d0a1a0a) return 'png';
  if (bytes.length >= 12 && bytes.toString('latin1', 0, 4) === 'RIFF' && bytes.toString('latin1', 8, 12) === 'WEBP') return 'webp';
  return undefined;
}

/** What an image's header says, read before any pixel is decoded. */
export interface ImageHeader {
  format: ImageFormat;
  width: number;
  height: number;
  /** Colour channels, alpha not counted. */
  colourChannels: number;
}

/** The per-image limits checked on the header: longest side, width × height. */
export interface HeaderLimits {
  /** Longest side accepted, in pixels; default 16384. */
  maxSide?: number;
  maxPixels: number;
}

export interface DecodeTarget extends HeaderLimits {
  width: number;
  height: number;
  resize: ResizeMode;
  /** 1 or 3: the colour channels the model takes; checked against the image when strict. */
  colourChannels: 1 | 3;
  strictChannels: boolean;
}

const DEFAULT_MAX_SIDE = 16384;
const FIT = { stretch: 'fill', cover: 'cover', contain: 'contain' } as const;

/** libvips' first line, for the client: says what is wrong ("VipsJpeg: Premature end of input file") without a stack. */
function vipsReason(error: unknown): string {
  return String((error as Error)?.message ?? error)
    .split('\n')[0]
    .slice(0, 200);
}

/**
 * The header of `bytes` alone (sharp's metadata(): no pixel is decoded), checked against the limits:
 * a decompression bomb (a small file declaring a huge image) or a thin one (1 × 20,000,000 pixels,
 * cheap in pixels, seconds to decode row by row) is refused (400) before any decoding.
 */
export async function readImageHeader(bytes: Buffer, name: string, limits: HeaderLimits): Promise<ImageHeader> {
  const format = sniffFormat(bytes);
  if (!format) throw new RequestFormatError(`request: ${name} is not an image (not JPEG, PNG or WebP by its first bytes)`);
  const sharp = await loadSharp();
  let width: number | undefined;
  let height: number | undefined;
  let channels: number | undefined;
  let hasAlpha = false;
  try {
    ({ width, height, channels, hasAlpha = false } = await sharp(bytes, { limitInputPixels: false }).metadata());
  } catch (error) {
    throw new RequestFormatError(`request: ${name} is truncated or corrupt: its ${format.toUpperCase()} header cannot be read (${vipsReason(error)})`);
  }
  if (!width || !height || !channels)
    throw new RequestFormatError(`request: ${name} is truncated or corrupt: its ${format.toUpperCase()} header gives no size`);
  if (width * height > limits.maxPixels) {
    throw new RequestFormatError(`request: ${name} is ${width}×${height} = ${width * height} pixels, over the limit of ${limits.maxPixels}`);
  }
  const maxSide = limits.maxSide ?? DEFAULT_MAX_SIDE;
  if (width > maxSide || height > maxSide) throw new RequestFormatError(`request: ${name} is ${width}×${height} pixels: a side over the limit of ${maxSide}`);
  return { format, width, height, colourChannels: channels - (hasAlpha ? 1 : 0) };
}

/** With strictChannels, an image whose colour channels differ from the model's is refused (400). */
export function checkChannels(header: ImageHeader, name: string, target: Pick<DecodeTarget, 'colourChannels' | 'strictChannels'>): void {
  if (target.strictChannels && header.colourChannels !== target.colourChannels) {
    const said = (n: number) => (n === 1 ? '1 colour channel (grayscale)' : `${n} colour channels`);
    throw new RequestFormatError(`request: ${name} has ${said(header.colourChannels)}; the model takes ${said(target.colourChannels)}`);
  }
}

/**
 * Decodes `bytes`, whose header readImageHeader has checked, to height × width × 3 RGB bytes (alpha
 * dropped), resized as declared. libvips decodes on its own threads: the event loop keeps running.
 */
export async function decodePixels(bytes: Buffer, name: string, target: DecodeTarget): Promise<Buffer> {
  const sharp = await loadSharp();
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: target.maxPixels, failOn: 'truncated' })
      .removeAlpha()
      .resize(target.width, target.height, { fit: FIT[target.resize], position: 'centre', background: { r: 0, g: 0, b: 0 } })
      // sRGB at 8 bits per sample, whatever came in (16-bit PNG, CMYK JPEG, grey).
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.width !== target.width || info.height !== target.height || info.channels !== 3 || data.length !== target.width * target.height * 3) {
      throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}`);
    }
    return data;
  } catch (error) {
    throw new RequestFormatError(`request: ${name} is truncated or corrupt (${vipsReason(error)})`);
  }
}

/** One image: its header checked (sides, pixels, channels), then decoded; see readImageHeader and decodePixels. */
export async function decodeImage(bytes: Buffer, name: string, target: DecodeTarget): Promise<Buffer> {
  checkChannels(await readImageHeader(bytes, name, target), name, target);
  return decodePixels(bytes, name, target);
}
