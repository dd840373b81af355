/**
 * The smoothing attacker (ModelGuard's adaptive harness queries each image 3 times): for every
 * transfer image it sends m copies, the image itself and m − 1 augmented ones (a shift of up to a
 * few pixels, a horizontal flip where the victim's domain allows it, never for digits, and a little
 * pixel noise), and trains on the average of the m answers. Every copy counts against the budget, so
 * a budget B buys ⌊B/m⌋ images.
 *
 * What it beats: a defense whose perturbation changes with the exact input while the clean answer
 * does not, such as keyed noise (the same input gets the same noise, so asking twice gives nothing,
 * but a shifted copy draws fresh noise and the average cancels it). What it costs: m times fewer
 * images than the plain attacker at the same budget; against a defense that perturbs every copy
 * alike (MAD, reverse sigmoid) the average keeps the perturbation.
 */
import type { ProbBatch } from '../../defenses/index.js';
import type { SmoothingSettings } from '../config.js';
import { gatherRows } from '../endpoint/kserve-client.js';
import { normaliseAnswers } from '../records/measures.js';
import { randomPolicy } from '../policies/random.js';
import { deriveSeed, seededRandom } from '../random.js';
import { trainKnockoffs } from './knockoff.js';
import { answerQuality } from './quality.js';
import type { AttackOptions, AttackResult, TransferSet } from './types.js';

export interface SmoothingAttackOptions extends AttackOptions {
  smoothing: SmoothingSettings;
  /** Whether copies may be flipped horizontally (the caller resolves "auto" from the victim's domain). */
  flip: boolean;
  /** [height, width, channels] of one image; default: a square one-channel image, or no geometry (noise only). */
  imageShape?: readonly number[];
}

/** [h, w, c] of a flat image of `features` values, when it is a square one-channel image. */
export function guessImageShape(features: number): [number, number, number] | undefined {
  const side = Math.round(Math.sqrt(features));
  return side * side === features ? [side, side, 1] : undefined;
}

function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/**
 * One augmented copy of `image` into `out`: shifted by (dy, dx) with zeros coming in, flipped when
 * asked, Gaussian noise added, clipped to [0, 1] and put on the 1/255 grid the endpoint receives.
 */
export function augmentImage(
  image: Float32Array,
  out: Float32Array,
  shape: readonly number[] | undefined,
  settings: Pick<SmoothingSettings, 'shift' | 'noise'>,
  flip: boolean,
  random: () => number,
): void {
  if (shape && shape.length === 3) {
    const [h, w, c] = shape;
    const dy = Math.floor(random() * (2 * settings.shift + 1)) - settings.shift;
    const dx = Math.floor(random() * (2 * settings.shift + 1)) - settings.shift;
    const mirror = flip && random() < 0.5;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const sy = y - dy;
        const sxRaw = x - dx;
        const sx = mirror ? w - 1 - sxRaw : sxRaw;
        for (let ch = 0; ch < c; ch++) {
          out[(y * w + x) * c + ch] = sy >= 0 && sy < h && sx >= 0 && sx < w ? image[(sy * w + sx) * c + ch] : 0;
        }
      }
    }
  } else out.set(image);
  for (let i = 0; i < out.length; i++) {
    const noisy = settings.noise > 0 ? out[i] + settings.noise * gaussian(random) : out[i];
    out[i] = Math.round(Math.min(1, Math.max(0, noisy)) * 255) / 255;
  }
}

export async function runSmoothingAttack(options: SmoothingAttackOptions): Promise<AttackResult> {
  const { pool, client, budget, classes, smoothing } = options;
  const features = pool.features;
  const copies = smoothing.copies;
  const images = Math.floor(budget / copies);
  if (images < 1) throw new RangeError(`budget ${budget} buys no image at ${copies} queries per image`);
  if (images > pool.rows)
    throw new RangeError(`budget ${budget} at ${copies} queries per image needs ${images} images; the attacker's pool holds ${pool.rows}`);
  const shape = options.imageShape ?? guessImageShape(features);
  // The plain attacker's image order (same seed, same first images), so the two compare pairwise.
  const policy = randomPolicy(pool, deriveSeed(options.seed, 'policy-random'));
  const random = seededRandom(deriveSeed(options.seed, 'smoothing-augment'));
  const x = new Float32Array(images * features);
  const averaged = new Float32Array(images * classes);
  const firstAnswers = new Float32Array(images * classes);
  const indices = new Int32Array(images);
  const perRequest = Math.max(1, Math.floor(options.requestRows / copies));
  const requestsBefore = client.requests;
  let done = 0;
  while (done < images) {
    const picked = policy.next(Math.min(perRequest, images - done));
    if (picked.length === 0) break;
    const originals = gatherRows(pool.x, features, picked);
    const batch = new Float32Array(picked.length * copies * features);
    for (let i = 0; i < picked.length; i++) {
      const image = originals.subarray(i * features, (i + 1) * features);
      batch.set(image, i * copies * features);
      for (let k = 1; k < copies; k++)
        augmentImage(image, batch.subarray((i * copies + k) * features, (i * copies + k + 1) * features), shape, smoothing, options.flip, random);
    }
    const answer = normaliseAnswers(await client.infer(batch, picked.length * copies, features));
    if (answer.cols !== classes) throw new RangeError(`the endpoint answered ${answer.cols} classes, the victim has ${classes}`);
    for (let i = 0; i < picked.length; i++) {
      const row = done + i;
      for (let c = 0; c < classes; c++) {
        let sum = 0;
        for (let k = 0; k < copies; k++) sum += answer.data[(i * copies + k) * classes + c];
        averaged[row * classes + c] = sum / copies;
        firstAnswers[row * classes + c] = answer.data[i * copies * classes + c];
      }
    }
    x.set(originals, done * features);
    indices.set(picked, done);
    done += picked.length;
    options.onProgress?.('query', done * copies, budget);
  }
  const used: ProbBatch = { rows: done, cols: classes, data: averaged.subarray(0, done * classes) };
  const raw: ProbBatch = { rows: done, cols: classes, data: firstAnswers.subarray(0, done * classes) };
  const transfer: TransferSet = { x: x.subarray(0, done * features), answers: used, indices: indices.subarray(0, done) };
  const quality = answerQuality(options.truth, transfer.x, raw, used);
  const outcomes = await trainKnockoffs(transfer, options);
  return { outcomes, transfer, queries: done * copies, requests: client.requests - requestsBefore, ...(quality ? { quality } : {}) };
}
