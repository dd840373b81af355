/** How the attacker picks its queries from its pool of images. */
import type { ProbBatch } from '../../defenses/index.js';

/** The attacker's images: N rows of `features` values, with the attacker's own coarse labels. */
export interface AttackerPool {
  x: Float32Array;
  rows: number;
  features: number;
  /** Coarse class of each image (the arms of the adaptive policy). */
  labels: ArrayLike<number>;
  classes: number;
}

export interface QueryPolicy {
  /** Up to `max` pool indices, never used before, to query next; empty when the pool is used up. */
  next(max: number): Int32Array;
  /** The (normalised) answers to the indices last returned by next(), in the same order. */
  observe(indices: Int32Array, answers: ProbBatch): Promise<void>;
  /** Largest useful request for this policy (the adaptive one learns between requests). */
  readonly preferredBatch?: number;
}
