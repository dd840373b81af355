/**
 * Small synthetic image sets for fast pipeline tests: each class is a fixed random prototype plus
 * pixel noise, so a small network learns it in one epoch. Two "datasets" differ in their prototypes.
 */
import type { DatasetLike, DatasetLoader, LabelledImages } from '../../../src/eval/world/world.js';
import { seededRandom } from '../../../src/eval/random.js';

function images(prototypes: Float32Array[], rows: number, features: number, noise: number, random: () => number): LabelledImages {
  const x = new Float32Array(rows * features);
  const labels = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const label = Math.floor(random() * prototypes.length);
    labels[r] = label;
    // Quantised to k/255 like real 8-bit images, so they survive the UINT8 wire format exactly.
    for (let f = 0; f < features; f++) x[r * features + f] = Math.round(255 * Math.min(1, Math.max(0, prototypes[label][f] + noise * (random() - 0.5)))) / 255;
  }
  return { x, labels, rows };
}

export function syntheticDataset(
  seed: number,
  options: { classes?: number; features?: number; train?: number; test?: number; noise?: number } = {},
): DatasetLike {
  const classes = options.classes ?? 10;
  const features = options.features ?? 784;
  const random = seededRandom(seed);
  const prototypes = Array.from({ length: classes }, () => Float32Array.from({ length: features }, () => (random() < 0.3 ? random() : 0)));
  const noise = options.noise ?? 0.6;
  return {
    train: images(prototypes, options.train ?? 600, features, noise, random),
    test: images(prototypes, options.test ?? 200, features, noise, random),
    classes,
  };
}

export function syntheticLoader(options: Parameters<typeof syntheticDataset>[1] = {}): DatasetLoader {
  const cache = new Map<string, DatasetLike>();
  return async (name) => {
    if (!cache.has(name)) cache.set(name, syntheticDataset(name === 'mnist' ? 11 : 29, options));
    return cache.get(name)!;
  };
}
