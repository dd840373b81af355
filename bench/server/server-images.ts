/**
 * What reading an image input costs: base64 JPEG → sharp decode + resize → the declared 224×224×3
 * float32 tensor (stretch, RGB, NHWC, 1/255, ImageNet mean/std), per image, sequential and a batch of
 * 16 decoded concurrently (libuv's pool: UV_THREADPOOL_SIZE, default 4). Sources: a 224×224 JPEG (no
 * resize) and a 640×480 JPEG (resized). The baseline, measured here, is what the same example costs as
 * a numeric tensor: JSON.parse of a KServe FP32 224×224×3 body plus its codec read.
 *
 *   npm run bench -- server-images [--seconds 2]
 */
import sharp from 'sharp';
import { pixelsToTensor } from '../../src/models/preprocess.js';
import { createInputReader, resolveInputOptions } from '../../src/server/inputs/index.js';
import { isEncodedImages, kserveV2Codec, type RequestInputs } from '../../src/server/protocols/index.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const budget = Number(args.get('seconds') ?? 2);

const reader = createInputReader(
  resolveInputOptions({ image: { width: 224, height: 224, scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] } }),
);
const codec = kserveV2Codec();

async function jpeg(width: number, height: number): Promise<string> {
  const raw = Buffer.alloc(width * height * 3);
  // Smooth gradients plus a little texture: a JPEG of photo-like size, not a flat one.
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) raw.set([(x * 255) / width, (y * 255) / height, (x * y + ((x * 7) ^ (y * 13))) & 255], (y * width + x) * 3);
  return (
    await sharp(raw, { raw: { width, height, channels: 3 } })
      .jpeg({ quality: 90 })
      .toBuffer()
  ).toString('base64');
}

/** Mean milliseconds per call of `work` (run repeatedly for about `budget` seconds, after a warm-up). */
async function msPer(work: () => Promise<unknown> | unknown, perCall = 1): Promise<number> {
  for (let i = 0; i < 3; i++) await work();
  let calls = 0;
  const start = performance.now();
  while (performance.now() - start < budget * 1000) {
    await work();
    calls++;
  }
  return (performance.now() - start) / calls / perCall;
}

const bodyOf = (images: string[]) => JSON.stringify({ inputs: [{ name: 'image', shape: [images.length], datatype: 'BYTES', data: images }] });
const read = (text: string) => {
  const found: RequestInputs = codec.readInputs(JSON.parse(text));
  return reader(found);
};

const numericBody = JSON.stringify({
  inputs: [{ name: 'image', shape: [1, 224, 224, 3], datatype: 'FP32', data: Array.from({ length: 224 * 224 * 3 }, (_, i) => ((i * 37) % 255) / 255) }],
});
const numeric = await msPer(() => {
  const found = codec.readInputs(JSON.parse(numericBody));
  if (isEncodedImages(found)) throw new Error('expected a numeric tensor');
  return reader(found);
});
console.log(
  `baseline: numeric FP32 224×224×3 tensor as JSON (${(numericBody.length / 1024).toFixed(0)} KiB), parse + read: ${numeric.toFixed(2)} ms per example`,
);

const resolvedImage = resolveInputOptions({ image: { width: 224, height: 224, scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] } })
  .image!;
const pixels = new Uint8Array(224 * 224 * 3).map((_, i) => i & 255);
const tensor = new Float32Array(224 * 224 * 3);
const math = await msPer(() => pixelsToTensor(pixels, resolvedImage, tensor));
const mathNchw = await msPer(() => pixelsToTensor(pixels, { ...resolvedImage, layout: 'nchw' }, tensor));
console.log(`preprocessing math alone (decoded RGB bytes → normalised float32): ${math.toFixed(3)} ms NHWC, ${mathNchw.toFixed(3)} ms NCHW per 224×224 image`);

for (const [w, h] of [
  [224, 224],
  [640, 480],
] as const) {
  const image = await jpeg(w, h);
  const single = bodyOf([image]);
  const batch = bodyOf(new Array(16).fill(image));
  const one = await msPer(() => read(single));
  const sixteen = await msPer(() => read(batch), 16);
  console.log(
    `${w}×${h} JPEG (${((image.length * 3) / 4 / 1024).toFixed(0)} KiB) → 224×224×3 float32: ${one.toFixed(2)} ms per image alone (${(one / numeric).toFixed(2)}× the numeric baseline), ` +
      `${sixteen.toFixed(2)} ms per image in a batch of 16 (${(1000 / sixteen).toFixed(0)} images/s)`,
  );
}
