/** Seeded randomness for the evaluation: reproducible picks, shuffles and splits. */

export { permutation, seededRandom } from '../models/random.js';

/** Derives an independent seed for a named purpose, so adding one consumer does not shift another. */
export function deriveSeed(seed: number, purpose: string): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < purpose.length; i++) {
    h = Math.imul(h ^ purpose.charCodeAt(i), 0x01000193) >>> 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  return h >>> 0;
}
