/**
 * The `inputs` serving option: how a request's inputs become the rows a surrogate takes. Declared
 * once, checked when the middleware or proxy is built; a bad value throws ServingOptionError saying
 * what to write instead.
 */
import { CHANNEL_ORDERS, IMAGE_LAYOUTS, channelCount, type ChannelOrder, type ImageLayout, type PixelPreprocessing } from '../../models/preprocess.js';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { integerAtLeast, joinPath, oneOfList, optionStyle, parseOptions, positiveNumber, trueOrFalse } from '../../validation/index.js';
import { ServingOptionError } from '../errors.js';

export type ResizeMode = 'stretch' | 'cover' | 'contain';
export const RESIZE_MODES: readonly ResizeMode[] = ['stretch', 'cover', 'contain'];

/** How encoded images (base64 JPEG/PNG/WebP) are turned into the model's input tensor. */
export interface ImageInputOptions {
  /** Model input size in pixels. */
  width: number;
  height: number;
  /** "stretch" (default: both sides to size, aspect not kept), "cover" (scale to fill, centre crop), "contain" (scale to fit, pad black). */
  resize?: ResizeMode;
  /** Channel order the model takes: "rgb" (default), "bgr", "grayscale" (BT.601 luma). */
  channels?: ChannelOrder;
  /** "nhwc" (default, TensorFlow) or "nchw" (PyTorch/ONNX). */
  layout?: ImageLayout;
  /** Multiplies each 0..255 pixel first, e.g. 1/255. Default 1. */
  scale?: number;
  /** Subtracted after scaling, per channel in the declared order (one number: every channel). Default 0. */
  mean?: number | readonly number[];
  /** Divides after the mean, per channel (one number: every channel). Default 1. */
  std?: number | readonly number[];
  /**
   * Refuse (400) an image whose colour channels differ from the declared ones (a grayscale JPEG for an
   * "rgb" model, a colour one for "grayscale"). Default false: converted, as PIL's convert("RGB") and
   * tf.io.decode_image(channels=3) do. An alpha channel is always dropped.
   */
  strictChannels?: boolean;
}

export interface InputOptions {
  /** Declared when the model takes images; base64 images are refused without it. */
  image?: ImageInputOptions;
  /** Largest image accepted, width × height read from its header before decoding (400 past it). Default 24,000,000. */
  maxPixels?: number;
  /** Largest encoded image, bytes after base64 decoding (413 past it). Default 8 MiB. */
  maxImageBytes?: number;
  /**
   * Longest side of an image, in pixels, read from its header before decoding (400 past it). Default
   * 16384. A thin image (1 × 20,000,000) passes maxPixels but costs seconds to decode, row by row.
   */
  maxImageSide?: number;
  /**
   * Pixel budget of one request: the images' width × height (from their headers) added up, checked
   * before any is decoded (413 past it). Default 100,000,000.
   */
  maxRequestPixels?: number;
  /**
   * Images decoded at once by one middleware or proxy, all requests together (sharp decodes off the
   * event loop, in libvips threads); the others wait their turn. Default: the number of CPUs.
   */
  maxConcurrentDecodes?: number;
  /** Multiplies numeric input tensors (not images) before the surrogate sees them, e.g. 1/255 for 0..255 pixels. Default 1. */
  numericScale?: number;
}

export interface ResolvedInputOptions {
  image?: PixelPreprocessing & { resize: ResizeMode; strictChannels: boolean };
  maxPixels: number;
  maxImageBytes: number;
  maxImageSide: number;
  maxRequestPixels: number;
  maxConcurrentDecodes: number;
  numericScale: number;
}

export const DEFAULT_MAX_PIXELS = 24_000_000;
export const DEFAULT_MAX_IMAGE_BYTES = 8 * 1024 * 1024;
export const DEFAULT_MAX_IMAGE_SIDE = 16384;
export const DEFAULT_MAX_REQUEST_PIXELS = 100_000_000;
/** The largest maxImageSide accepted (a JPEG header cannot declare a longer side). */
const MAX_IMAGE_SIDE_LIMIT = 65535;
const MAX_CONCURRENT_DECODES_LIMIT = 1024;
/** Past this a side is surely a typo (and a tensor of it would not fit in memory). */
const MAX_SIDE = 16384;
const SCALE = 'a positive number such as 0.00392156862745098 (1/255)';
const quoted = (choices: readonly string[]) => `one of ${choices.map((c) => `"${c}"`).join(', ')}`;
const limit = (max = Number.MAX_SAFE_INTEGER) => integerAtLeast(1, `an integer from 1 to ${max}`, max).optional();
const perChannelSchema = z
  .union([z.number(), z.array(z.number())], { error: 'one number, or one per channel of the declared order, e.g. [0.485, 0.456, 0.406]' })
  .optional();

const imageSchema = z.strictObject(
  {
    width: integerAtLeast(1, `an integer from 1 to ${MAX_SIDE}`, MAX_SIDE),
    height: integerAtLeast(1, `an integer from 1 to ${MAX_SIDE}`, MAX_SIDE),
    resize: oneOfList(RESIZE_MODES, quoted(RESIZE_MODES)).optional(),
    channels: oneOfList(CHANNEL_ORDERS, quoted(CHANNEL_ORDERS)).optional(),
    layout: oneOfList(IMAGE_LAYOUTS, quoted(IMAGE_LAYOUTS)).optional(),
    scale: positiveNumber(SCALE).optional(),
    mean: perChannelSchema,
    std: perChannelSchema,
    strictChannels: trueOrFalse().optional(),
  } satisfies Record<keyof ImageInputOptions, z.ZodType>,
  { error: 'an object, e.g. { width: 224, height: 224, resize: "cover", scale: 1 / 255 }' },
);

const inputsSchema = z.strictObject(
  {
    image: imageSchema.optional(),
    maxPixels: limit(),
    maxImageBytes: limit(),
    maxImageSide: limit(MAX_IMAGE_SIDE_LIMIT),
    maxRequestPixels: limit(),
    maxConcurrentDecodes: limit(MAX_CONCURRENT_DECODES_LIMIT),
    numericScale: positiveNumber(SCALE).optional(),
  } satisfies Record<keyof InputOptions, z.ZodType>,
  { error: 'an object, e.g. { image: { width: 224, height: 224, scale: 1 / 255 } }' },
);

/** Messages read "inputs: image.width must be ..."; the option itself is "inputs". */
const style = optionStyle(ServingOptionError, '', {
  name: (path) => (path.length ? `inputs: ${joinPath('', path)}` : 'inputs'),
  unknownKeys: (_name, keys, allowed, path) =>
    `inputs: unknown ${path.length ? `${joinPath('', path)} ` : ''}option(s) ${keys.join(', ')}; allowed: ${allowed.join(', ')}`,
});

const fail = (message: string): never => {
  throw new ServingOptionError(`inputs: ${message}`);
};

/** A per-channel list of `count` finite numbers from one number or a list; `positive` for std. */
function perChannel(value: unknown, name: string, count: number, fallback: number, positive: boolean): number[] {
  if (value === undefined) return new Array<number>(count).fill(fallback);
  const list = typeof value === 'number' ? new Array<number>(count).fill(value) : value;
  const example = count === 1 ? '0.5' : name === 'std' ? '[0.229, 0.224, 0.225]' : '[0.485, 0.456, 0.406]';
  if (!Array.isArray(list) || list.length !== count || !list.every((v) => typeof v === 'number' && Number.isFinite(v) && (!positive || v > 0))) {
    fail(
      `image.${name} must be ${count === 1 ? 'one' : `one number or ${count}`} finite ${positive ? 'positive ' : ''}number${count === 1 ? '' : 's'} (one per channel of the declared order), e.g. ${example}; got ${JSON.stringify(value)}`,
    );
  }
  return list as number[];
}

export function resolveInputOptions(options: InputOptions | undefined): ResolvedInputOptions {
  if (options === undefined) {
    return {
      maxPixels: DEFAULT_MAX_PIXELS,
      maxImageBytes: DEFAULT_MAX_IMAGE_BYTES,
      maxImageSide: DEFAULT_MAX_IMAGE_SIDE,
      maxRequestPixels: DEFAULT_MAX_REQUEST_PIXELS,
      maxConcurrentDecodes: availableParallelism(),
      numericScale: 1,
    };
  }
  const given = parseOptions(inputsSchema, options, style);
  const resolved: ResolvedInputOptions = {
    maxPixels: given.maxPixels ?? DEFAULT_MAX_PIXELS,
    maxImageBytes: given.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES,
    maxImageSide: given.maxImageSide ?? DEFAULT_MAX_IMAGE_SIDE,
    maxRequestPixels: given.maxRequestPixels ?? DEFAULT_MAX_REQUEST_PIXELS,
    maxConcurrentDecodes: given.maxConcurrentDecodes ?? availableParallelism(),
    numericScale: given.numericScale ?? 1,
  };
  const image = given.image;
  if (image === undefined) return resolved;
  const channels = image.channels ?? 'rgb';
  const count = channelCount(channels);
  resolved.image = {
    width: image.width,
    height: image.height,
    resize: image.resize ?? 'stretch',
    channels,
    layout: image.layout ?? 'nhwc',
    scale: image.scale ?? 1,
    mean: perChannel(image.mean, 'mean', count, 0, false),
    std: perChannel(image.std, 'std', count, 1, true),
    strictChannels: image.strictChannels ?? false,
  };
  return resolved;
}
