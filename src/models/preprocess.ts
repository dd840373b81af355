/**
 * Image preprocessing math: decoded pixels (8-bit, interleaved H×W×C, as a decoder hands them) → the
 * float32 tensor a model takes, in its declared channel order, layout, scale and mean/std. Pure: no
 * decoder, no tfjs, so it runs (and is tested) without native code. The serving layer decodes and
 * resizes (server/inputs/), then calls this, so a surrogate sees what the victim model sees.
 */

/** Memory order of one example: height × width × channels, or channels × height × width. */
export type ImageLayout = 'nhwc' | 'nchw';
/** Channel order the model takes: RGB, BGR (OpenCV/Caffe models), or one grey channel. */
export type ChannelOrder = 'rgb' | 'bgr' | 'grayscale';

export const IMAGE_LAYOUTS: readonly ImageLayout[] = ['nhwc', 'nchw'];
export const CHANNEL_ORDERS: readonly ChannelOrder[] = ['rgb', 'bgr', 'grayscale'];

/** What a model takes, after resizing: value = (pixel × scale − mean[c]) / std[c], per channel of the declared order. */
export interface PixelPreprocessing {
  readonly width: number;
  readonly height: number;
  readonly channels: ChannelOrder;
  readonly layout: ImageLayout;
  /** Multiplies the 0..255 pixel first, e.g. 1/255. */
  readonly scale: number;
  /** Per channel in the declared order (one value for grayscale); default zeros. */
  readonly mean: readonly number[];
  /** Per channel in the declared order; default ones. */
  readonly std: readonly number[];
}

export function channelCount(order: ChannelOrder): 1 | 3 {
  return order === 'grayscale' ? 1 : 3;
}

/** Shape of one example, without the batch dimension: [H, W, C] or [C, H, W]. */
export function exampleShape(spec: Pick<PixelPreprocessing, 'width' | 'height' | 'channels' | 'layout'>): [number, number, number] {
  const c = channelCount(spec.channels);
  return spec.layout === 'nhwc' ? [spec.height, spec.width, c] : [c, spec.height, spec.width];
}

/** ITU-R BT.601 luma, as PIL's convert("L") and tf.image.rgb_to_grayscale weigh R, G, B (unrounded). */
export const LUMA = [0.299, 0.587, 0.114] as const;

/**
 * Writes one image into `out` at `offset` (H×W×C floats in the declared layout). `pixels` holds
 * height × width × 3 bytes, interleaved RGB (what the decoder gives for every source image);
 * grayscale is computed here as BT.601 luma, BGR reads the bytes backwards.
 */
export function pixelsToTensor(pixels: Uint8Array, spec: PixelPreprocessing, out: Float32Array, offset = 0): void {
  const c = channelCount(spec.channels);
  const plane = spec.width * spec.height;
  if (pixels.length !== plane * 3) throw new RangeError(`expected ${spec.height}×${spec.width}×3 = ${plane * 3} bytes of RGB pixels, got ${pixels.length}`);
  if (!Number.isInteger(offset) || offset < 0 || offset + plane * c > out.length)
    throw new RangeError(`the output has no room for ${plane * c} values at ${offset}`);
  // Per output channel: value = pixel × a + b, with a = scale/std and b = −mean/std (one multiply-add per value).
  const a = new Float64Array(c);
  const b = new Float64Array(c);
  for (let k = 0; k < c; k++) {
    const std = spec.std[k] ?? 1;
    a[k] = spec.scale / std;
    b[k] = -(spec.mean[k] ?? 0) / std;
  }
  // Where channel k of the output sits in one output pixel, and the step from one pixel to the next.
  const channelStride = spec.layout === 'nhwc' ? 1 : plane;
  const pixelStride = spec.layout === 'nhwc' ? c : 1;
  if (c === 1) {
    const [wr, wg, wb] = LUMA;
    for (let p = 0, q = 0; p < plane; p++, q += 3) out[offset + p] = (wr * pixels[q] + wg * pixels[q + 1] + wb * pixels[q + 2]) * a[0] + b[0];
    return;
  }
  const bgr = spec.channels === 'bgr';
  for (let k = 0; k < 3; k++) {
    const from = bgr ? 2 - k : k;
    const ak = a[k];
    const bk = b[k];
    let target = offset + k * channelStride;
    for (let q = from; q < pixels.length; q += 3, target += pixelStride) out[target] = pixels[q] * ak + bk;
  }
}

/**
 * Converts `rows` examples of height × width × channels between layouts; returns `data` itself when
 * the layouts are the same (no copy).
 */
export function convertLayout(
  data: Float32Array,
  rows: number,
  height: number,
  width: number,
  channels: number,
  from: ImageLayout,
  to: ImageLayout,
): Float32Array {
  if (from === to || channels === 1) return data;
  const plane = height * width;
  const size = plane * channels;
  if (data.length !== rows * size) throw new RangeError(`expected ${rows} × ${size} values, got ${data.length}`);
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    const base = r * size;
    for (let p = 0; p < plane; p++) {
      for (let k = 0; k < channels; k++) {
        // nhwc index: p × C + k; nchw index: k × plane + p.
        if (from === 'nhwc') out[base + k * plane + p] = data[base + p * channels + k];
        else out[base + p * channels + k] = data[base + k * plane + p];
      }
    }
  }
  return out;
}
