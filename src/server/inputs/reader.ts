/**
 * The inputs stage: what a codec found in a request (a numeric tensor, or encoded images) → the
 * float32 rows a surrogate takes, in the declared layout. Numeric tensors are passed on as they are
 * (no copy) unless they must be rescaled or transposed, and synchronously; images are decoded
 * concurrently (sharp works off the event loop) and preprocessed with the models layer's math.
 */
import { channelCount, convertLayout, exampleShape, pixelsToTensor, type ImageLayout } from '../../models/preprocess.js';
import { RequestFormatError } from '../errors.js';
import { isEncodedImages, type EncodedImages, type InputRows, type RequestInputs } from '../protocols/index.js';
import { decodeBase64Image } from './base64.js';
import { decodeImage } from './decode.js';
import type { ResolvedInputOptions } from './options.js';

/** Turns a codec's view of the request inputs into surrogate rows; throws (or rejects with) RequestFormatError for the client's mistakes. */
export type InputReader = (inputs: RequestInputs) => InputRows | Promise<InputRows>;

const shapeText = (shape: readonly number[]) => `[${shape.join(', ')}]`;

export function createInputReader(options: ResolvedInputOptions): InputReader {
  const { image, numericScale } = options;

  const readNumeric = (inputs: InputRows): InputRows => {
    let { data, shape } = inputs;
    if (image) {
      const c = channelCount(image.channels);
      const declared = exampleShape(image);
      const other: ImageLayout = image.layout === 'nhwc' ? 'nchw' : 'nhwc';
      const otherShape = exampleShape({ ...image, layout: other });
      if (inputs.cols !== declared[0] * declared[1] * declared[2]) {
        throw new RequestFormatError(`request: the input rows have ${inputs.cols} values${shape ? ` (shape ${shapeText(shape)})` : ''}; the model takes ${shapeText(declared)} (${image.layout}) = ${declared[0] * declared[1] * declared[2]}`);
      }
      const matches = (s: readonly number[]) => shape!.length === 3 && s.every((d, i) => d === shape![i]);
      // Rank-3 examples say their layout by their shape; one that fits both (C = H = W) is taken as declared.
      if (shape && shape.length === 3 && !matches(declared)) {
        if (!matches(otherShape)) throw new RequestFormatError(`request: input examples of shape ${shapeText(shape)}; the model takes ${shapeText(declared)} (${image.layout}) or ${shapeText(otherShape)} (${other})`);
        data = convertLayout(data, inputs.rows, image.height, image.width, c, other, image.layout);
      }
      shape = declared;
    }
    if (numericScale !== 1) data = data.map((v) => v * numericScale);
    return data === inputs.data && shape === inputs.shape ? inputs : { ...inputs, data, shape };
  };

  const readImages = async (inputs: EncodedImages): Promise<InputRows> => {
    if (!image) {
      throw new RequestFormatError(`request: ${inputs.where} holds encoded images, but this server declares no image preprocessing (the inputs.image option, or --image-size); send a numeric tensor`);
    }
    const shape = exampleShape(image);
    const cols = shape[0] * shape[1] * shape[2];
    const data = new Float32Array(inputs.rows * cols);
    const target = { width: image.width, height: image.height, resize: image.resize, colourChannels: channelCount(image.channels), strictChannels: image.strictChannels, maxPixels: options.maxPixels };
    const names = inputs.images.map((_, r) => (inputs.rows === 1 ? `the image in ${inputs.where}` : `image ${r} of ${inputs.where}`));
    // Base64 and size checks are synchronous and cheap: all of them before any image is decoded.
    const encoded = inputs.images.map((text, r) => decodeBase64Image(text, names[r], options.maxImageBytes));
    await Promise.all(encoded.map((bytes, r) => decodeImage(bytes, names[r], target).then((pixels) => pixelsToTensor(pixels, image, data, r * cols))));
    return { rows: inputs.rows, cols, data, shape, datatype: 'FP32' };
  };

  return (inputs) => (isEncodedImages(inputs) ? readImages(inputs) : readNumeric(inputs));
}
