/** The inputs stage of the serving layer: request inputs (numeric tensors, base64 images) → surrogate rows. Re-exports only. */
export { createInputReader, DEFAULT_MAX_IMAGES, type ImageDecoder, type InputReader, type InputReaderLimits } from './reader.js';
export {
  DEFAULT_MAX_IMAGE_BYTES,
  DEFAULT_MAX_IMAGE_SIDE,
  DEFAULT_MAX_PIXELS,
  DEFAULT_MAX_REQUEST_PIXELS,
  RESIZE_MODES,
  resolveInputOptions,
  type ImageInputOptions,
  type InputOptions,
  type ResizeMode,
  type ResolvedInputOptions,
} from './options.js';
export { decodeBase64Image } from './base64.js';
export {
  checkChannels,
  decodeImage,
  decodePixels,
  readImageHeader,
  sniffFormat,
  type DecodeTarget,
  type HeaderLimits,
  type ImageFormat,
  type ImageHeader,
} from './decode.js';
export { createLimiter, forEachLimited, type Limiter } from './limiter.js';
