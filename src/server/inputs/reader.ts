/**
 * The inputs stage: what a codec found in a request (a numeric tensor, or encoded images) → the
 * float32 rows a surrogate takes, in the declared layout. Numeric tensors are passed on as they are
 * (no copy) unless they must be rescaled or transposed, and synchronously; images are decoded
 * concurrently (sharp works off the event loop) and preprocessed with the models layer's math.
 *
 * What images may cost is checked from the cheapest step up, each before the next is paid for: the
 * image count (the row limit), each image's bytes, each header (sides, pixels, channels) and the
 * request's pixel budget; only then is any image decoded, a bounded number at a time per reader.
 */
import { availableParallelism } from 'node:os';
import { channelCount, convertLayout, exampleShape, pixelsToTensor, type ImageLayout } from '../../models/preprocess.js';
import { RequestFormatError } from '../errors.js';
import { isEncodedImages, type EncodedImages, type InputRows, type RequestInputs } from '../protocols/index.js';
import { decodeBase64Image } from './base64.js';
import { checkChannels, decodePixels, readImageHeader, type DecodeTarget, type ImageHeader } from './decode.js';
import { createLimiter, forEachLimited } from './limiter.js';
import { DEFAULT_MAX_IMAGE_SIDE, DEFAULT_MAX_REQUEST_PIXELS, type ResolvedInputOptions } from './options.js';

/** Turns a codec's view of the request inputs into surrogate rows; throws (or rejects with) RequestFormatError for the client's mistakes. */
export type InputReader = (inputs: RequestInputs) => InputRows | Promise<InputRows>;

const shapeText = (shape: readonly number[]) => `[${shape.join(', ')}]`;

/** Images accepted in one request when the context provider sets no row limit (the batching default). */
export const DEFAULT_MAX_IMAGES = 4096;

/** The two steps of reading an image; replaceable to observe them (tests count the decodes). */
export interface ImageDecoder {
  header(bytes: Buffer, name: string, limits: DecodeTarget): Promise<ImageHeader>;
  pixels(bytes: Buffer, name: string, target: DecodeTarget): Promise<Buffer>;
}

export interface InputReaderLimits {
  /** Rows one request may carry (the context provider's maxRowsPerRequest): more images are refused (413) before any is read. Default 4096. */
  maxRows?: number;
  decoder?: ImageDecoder;
}

export function createInputReader(options: ResolvedInputOptions, limits: InputReaderLimits = {}): InputReader {
  const { image, numericScale } = options;
  const maxImages = limits.maxRows ?? DEFAULT_MAX_IMAGES;
  const decoder: ImageDecoder = limits.decoder ?? { header: readImageHeader, pixels: decodePixels };
  // Options resolved by an older caller may lack the newer limits: their defaults then.
  const maxImageSide = options.maxImageSide ?? DEFAULT_MAX_IMAGE_SIDE;
  const maxRequestPixels = options.maxRequestPixels ?? DEFAULT_MAX_REQUEST_PIXELS;
  const concurrency = options.maxConcurrentDecodes ?? availableParallelism();
  // One limiter per reader, so per middleware or proxy: all its requests' decodes together.
  const decodes = createLimiter(concurrency);

  const readNumeric = (inputs: InputRows): InputRows => {
    let { data, shape } = inputs;
    // JSON has no Infinity, but a number past float32's range (1e400, or 1e39) reads as one: no model input.
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) {
        const cols = Math.max(1, inputs.cols);
        throw new RequestFormatError(
          `request: input row ${Math.floor(i / cols)} value ${i % cols} is not a finite number (${data[i]}: a JSON number past ±3.4e38, such as 1e400, overflows)`,
        );
      }
    }
    if (image) {
      const c = channelCount(image.channels);
      const declared = exampleShape(image);
      const other: ImageLayout = image.layout === 'nhwc' ? 'nchw' : 'nhwc';
      const otherShape = exampleShape({ ...image, layout: other });
      if (inputs.cols !== declared[0] * declared[1] * declared[2]) {
        throw new RequestFormatError(
          `request: the input rows have ${inputs.cols} values${shape ? ` (shape ${shapeText(shape)})` : ''}; the model takes ${shapeText(declared)} (${image.layout}) = ${declared[0] * declared[1] * declared[2]}`,
        );
      }
      const matches = (s: readonly number[]) => shape!.length === 3 && s.every((d, i) => d === shape![i]);
      // Rank-3 examples say their layout by their shape; one that fits both (C = H = W) is taken as declared.
      if (shape && shape.length === 3 && !matches(declared)) {
        if (!matches(otherShape))
          throw new RequestFormatError(
            `request: input examples of shape ${shapeText(shape)}; the model takes ${shapeText(declared)} (${image.layout}) or ${shapeText(otherShape)} (${other})`,
          );
        data = convertLayout(data, inputs.rows, image.height, image.width, c, other, image.layout);
      }
      shape = declared;
    }
    if (numericScale !== 1) data = data.map((v) => v * numericScale);
    return data === inputs.data && shape === inputs.shape ? inputs : { ...inputs, data, shape };
  };

  const readImages = async (inputs: EncodedImages): Promise<InputRows> => {
    if (!image) {
      throw new RequestFormatError(
        `request: ${inputs.where} holds encoded images, but this server declares no image preprocessing (the inputs.image option, or --image-size); send a numeric tensor`,
      );
    }
    // The count first: a request over the row limit costs nothing more.
    if (inputs.rows > maxImages)
      throw new RequestFormatError(`request: ${inputs.rows} images in ${inputs.where}; at most ${maxImages} per request are accepted, split the batch`, 413);
    const names = inputs.images.map((_, r) => (inputs.rows === 1 ? `the image in ${inputs.where}` : `image ${r} of ${inputs.where}`));
    const shape = exampleShape(image);
    const cols = shape[0] * shape[1] * shape[2];
    const target: DecodeTarget = {
      width: image.width,
      height: image.height,
      resize: image.resize,
      colourChannels: channelCount(image.channels),
      strictChannels: image.strictChannels,
      maxPixels: options.maxPixels,
      maxSide: maxImageSide,
    };
    // Base64 and size checks are synchronous and cheap: all of them before any image is read.
    const encoded = inputs.images.map((text, r) => decodeBase64Image(text, names[r], options.maxImageBytes));
    // The headers (no pixel decoded): sides, pixels and channels of each image, then the request's pixel budget.
    const headers = new Array<ImageHeader>(inputs.rows);
    await forEachLimited(inputs.rows, decodes, concurrency, async (r) => {
      headers[r] = await decoder.header(encoded[r], names[r], target);
      checkChannels(headers[r], names[r], target);
    });
    let pixels = 0;
    for (let r = 0; r < inputs.rows; r++) {
      pixels += headers[r].width * headers[r].height;
      if (pixels > maxRequestPixels) {
        throw new RequestFormatError(
          `request: ${names[r]} brings the request’s images to ${pixels} pixels (width × height, from their headers), over the limit of ${maxRequestPixels} per request; send fewer or smaller images`,
          413,
        );
      }
    }
    const data = new Float32Array(inputs.rows * cols);
    // Then the pixels, a bounded number at a time; the first bad image stops the rest.
    await forEachLimited(inputs.rows, decodes, concurrency, async (r) => {
      pixelsToTensor(await decoder.pixels(encoded[r], names[r], target), image, data, r * cols);
    });
    return { rows: inputs.rows, cols, data, shape, datatype: 'FP32' };
  };

  return (inputs) => (isEncodedImages(inputs) ? readImages(inputs) : readNumeric(inputs));
}
