/** The inputs stage of the serving layer: request inputs (numeric tensors, base64 images) → surrogate rows. Re-exports only. */
export { createInputReader, type InputReader } from './reader.js';
export { DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS, RESIZE_MODES, resolveInputOptions, type ImageInputOptions, type InputOptions, type ResizeMode, type ResolvedInputOptions } from './options.js';
export { decodeBase64Image } from './base64.js';
export { decodeImage, sniffFormat, type DecodeTarget, type ImageFormat } from './decode.js';
