/** Seeded synthetic query streams for the detection tests and the bench: natural-like and JBDA-like. */
import type { ClientObservation } from '../../src/detection/index.js';

/** mulberry32: a small seeded generator. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

export interface Query {
  readonly input: Float32Array;
  readonly label: number;
}

/** Class centres in [0.2, 0.8]^cols. */
export function centres(random: () => number, classes: number, cols: number): Float32Array[] {
  return Array.from({ length: classes }, () => Float32Array.from({ length: cols }, () => 0.2 + 0.6 * random()));
}

/** i.i.d. draws: a random class's centre plus Gaussian noise (natural-like: no two queries related). */
export function naturalQueries(seed: number, count: number, classes = 10, cols = 784, noise = 0.15): Query[] {
  const random = rng(seed);
  const mu = centres(random, classes, cols);
  return Array.from({ length: count }, () => {
    const label = Math.floor(random() * classes);
    return { label, input: Float32Array.from(mu[label], (m) => m + noise * gaussian(random)) };
  });
}

/**
 * JBDA-like: a few natural seeds, then rounds in which every point so far is sent again moved by
 * λ·sign(random direction) (Papernot et al.'s Jacobian augmentation with a random sign pattern).
 */
export function jbdaQueries(seed: number, count: number, seeds = 20, classes = 10, cols = 784, lambda = 0.05): Query[] {
  const random = rng(seed);
  const points = naturalQueries(seed ^ 0x9e3779b9, seeds, classes, cols);
  const out: Query[] = [...points];
  while (out.length < count) {
    const round = out.slice();
    for (const p of round) {
      if (out.length >= count) break;
      out.push({ label: p.label, input: Float32Array.from(p.input, (v) => v + (random() < 0.5 ? -lambda : lambda)) });
    }
  }
  return out.slice(0, count);
}

/** One observation per query (batch of one row): the victim is confident in the query's class. */
export function observationOf(query: Query, time: number, classes = 10, confidence = 0.9): ClientObservation {
  const probs = new Float32Array(classes).fill((1 - confidence) / (classes - 1));
  probs[query.label] = confidence;
  return { time, probs: { rows: 1, cols: classes, data: probs }, inputs: { rows: 1, cols: query.input.length, data: query.input } };
}
