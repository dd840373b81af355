/**
 * The flags that declare how request inputs reach the surrogate (image preprocessing, image limits,
 * the numeric --input-scale), and their translation into the `inputs` serving option. One file, so
 * any command (or a config file) can take the same declarations.
 */
import type { Command } from 'commander';
import { z } from 'zod';
import { ServingOptionError } from '../../server/errors.js';
import { fromText, optionStyle, parseOptions, positiveInteger, positiveNumber } from '../../validation/index.js';
import type { ImageInputOptions, InputOptions } from '../../server/inputs/index.js';

export interface InputFlags {
  inputScale?: string;
  imageSize?: string;
  imageResize?: string;
  imageChannels?: string;
  imageLayout?: string;
  imageScale?: string;
  imageMean?: string;
  imageStd?: string;
  imageStrictChannels?: boolean;
  maxPixels?: string;
  maxImageBytes?: string;
  maxImageSide?: string;
  maxRequestPixels?: string;
  maxConcurrentDecodes?: string;
}

export function registerInputFlags(command: Command): Command {
  return command
    .option('--input-scale <factor>', 'multiply numeric request inputs by this before the surrogate sees them, e.g. 1/255 for 0..255 pixels')
    .option('--image-size <WxH>', 'the model takes images of this size, e.g. 224x224; base64 images in requests are decoded and preprocessed for the surrogate')
    .option('--image-resize <mode>', 'stretch (default), cover (fill and centre-crop) or contain (fit and pad black)')
    .option('--image-channels <order>', 'rgb (default), bgr or grayscale')
    .option('--image-layout <layout>', 'nhwc (default) or nchw')
    .option('--image-scale <factor>', 'multiply 0..255 pixels by this first, e.g. 1/255')
    .option('--image-mean <list>', 'per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406')
    .option('--image-std <list>', 'per-channel std divided by after the mean, e.g. 0.229,0.224,0.225')
    .option('--image-strict-channels', 'refuse (400) images whose colour channels differ from --image-channels instead of converting them')
    .option('--max-pixels <n>', 'largest image accepted, width × height from its header (400 past it)')
    .option('--max-image-bytes <n>', 'largest encoded image in bytes (413 past it)')
    .option('--max-image-side <n>', 'longest image side in pixels, from its header (400 past it; default 16384)')
    .option(
      '--max-request-pixels <n>',
      'pixel budget of one request: its images’ width × height added up, from their headers, before any is decoded (413 past it; default 100000000)',
    )
    .option('--max-concurrent-decodes <n>', 'images decoded at once, all requests together (default: the number of CPUs)');
}

const fail = (message: string): never => {
  throw new ServingOptionError(message);
};

/** "0.5", "1e-3" or a fraction "1/255" as a number; other text passes unchanged (and is refused). */
function fromFraction(text: unknown): unknown {
  if (typeof text !== 'string') return text;
  const fraction = /^\s*([^/]+)\/([^/]+)\s*$/.exec(text);
  const value = fraction ? Number(fraction[1]) / Number(fraction[2]) : text.trim() === '' ? Number.NaN : Number(text);
  return Number.isFinite(value) ? value : text;
}

const NUMBER = z.preprocess(fromFraction, z.number({ error: 'a number or a fraction such as 1/255' }));
const POSITIVE = z.preprocess(fromFraction, positiveNumber());
const COUNT = fromText(positiveInteger());
const SIZE = z.string().regex(/^\s*\d+\s*[x×]\s*\d+\s*$/i, { error: 'WIDTHxHEIGHT such as 224x224' });

const flag = <S extends z.ZodType>(schema: S, text: string, name: string): z.output<S> => parseOptions(schema, text, optionStyle(ServingOptionError, name));

function parseList(text: string, name: string): number | number[] {
  const values = text.split(',').map((part) => flag(NUMBER, part, name));
  return values.length === 1 ? values[0] : values;
}

/** The inputs option from the flags; undefined when none was given. Values are checked again (with the option's messages) when the proxy is built. */
export function inputOptionsFromFlags(flags: InputFlags): InputOptions | undefined {
  const inputs: InputOptions = {};
  if (flags.inputScale !== undefined) {
    inputs.numericScale = flag(POSITIVE, flags.inputScale, '--input-scale');
  }
  if (flags.maxPixels !== undefined) inputs.maxPixels = flag(COUNT, flags.maxPixels, '--max-pixels');
  if (flags.maxImageBytes !== undefined) inputs.maxImageBytes = flag(COUNT, flags.maxImageBytes, '--max-image-bytes');
  if (flags.maxImageSide !== undefined) inputs.maxImageSide = flag(COUNT, flags.maxImageSide, '--max-image-side');
  if (flags.maxRequestPixels !== undefined) inputs.maxRequestPixels = flag(COUNT, flags.maxRequestPixels, '--max-request-pixels');
  if (flags.maxConcurrentDecodes !== undefined) inputs.maxConcurrentDecodes = flag(COUNT, flags.maxConcurrentDecodes, '--max-concurrent-decodes');
  const imageFlags = (['imageResize', 'imageChannels', 'imageLayout', 'imageScale', 'imageMean', 'imageStd', 'imageStrictChannels'] as const).filter(
    (k) => flags[k] !== undefined,
  );
  if (flags.imageSize === undefined) {
    if (imageFlags.length)
      fail(`${imageFlags.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')} need(s) --image-size, e.g. --image-size 224x224`);
  } else {
    const [width, height] = flag(SIZE, flags.imageSize, '--image-size').split(/[x×]/i).map(Number);
    const image: ImageInputOptions = { width, height };
    if (flags.imageResize !== undefined) image.resize = flags.imageResize as ImageInputOptions['resize'];
    if (flags.imageChannels !== undefined) image.channels = flags.imageChannels as ImageInputOptions['channels'];
    if (flags.imageLayout !== undefined) image.layout = flags.imageLayout as ImageInputOptions['layout'];
    if (flags.imageScale !== undefined) image.scale = flag(NUMBER, flags.imageScale, '--image-scale');
    if (flags.imageMean !== undefined) image.mean = parseList(flags.imageMean, '--image-mean');
    if (flags.imageStd !== undefined) image.std = parseList(flags.imageStd, '--image-std');
    if (flags.imageStrictChannels) image.strictChannels = true;
    inputs.image = image;
  }
  return Object.keys(inputs).length ? inputs : undefined;
}
