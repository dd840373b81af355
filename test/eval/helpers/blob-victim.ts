/**
 * The detection evaluations' synthetic world: blobs around three class corners of a 16-value space,
 * a small MLP victim trained on them with its 11 training checkpoints (HODA), and an attacker stream
 * querying halfway between two class centres, where the victim is unsure (out of distribution).
 */
import type { AttackerStream } from '../../../src/eval/detection/streams.js';
import { seededRandom } from '../../../src/eval/random.js';
import { checkpointRecorder, createModel, tf, trainModel, type LayersModel } from '../../../src/models/index.js';

export const FEATURES = 16;
export const CLASSES = 3;
const CENTERS = [0, 1, 2].map((c) => Float32Array.from({ length: FEATURES }, (_, i) => (i % 3 === c ? 0.85 : 0.15)));

/** Blobs around three corners: the victim's in-distribution data. */
export function blobs(rows: number, seed: number) {
  const random = seededRandom(seed);
  const x = new Float32Array(rows * FEATURES);
  const labels = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    labels[r] = r % CLASSES;
    for (let i = 0; i < FEATURES; i++) x[r * FEATURES + i] = Math.min(1, Math.max(0, CENTERS[labels[r]][i] + (random() - 0.5) * 0.2));
  }
  return { x, labels, rows };
}

/** `rows` queries halfway between two class centres, each value moved by `jitter(row, value)`. */
export function betweenClasses(rows: number, jitter: (r: number, i: number) => number): AttackerStream {
  return {
    name: 'between-classes',
    family: 'other',
    async run(client, requestRows) {
      const x = new Float32Array(rows * FEATURES);
      for (let r = 0; r < rows; r++) for (let i = 0; i < FEATURES; i++) x[r * FEATURES + i] = (CENTERS[r % 3][i] + CENTERS[(r + 1) % 3][i]) / 2 + jitter(r, i);
      const answers = new Float32Array(rows * CLASSES);
      for (let done = 0; done < rows; done += requestRows) {
        const n = Math.min(requestRows, rows - done);
        const got = await client.infer(x.subarray(done * FEATURES, (done + n) * FEATURES), n, FEATURES);
        answers.set(got.data, done * CLASSES);
      }
      return { x, answers: { rows, cols: CLASSES, data: answers }, indices: Int32Array.from({ length: rows }, (_, i) => i) };
    },
  };
}

/** The victim trained on 600 blobs, and its 11 checkpoints as models. */
export async function blobVictim(): Promise<{ victim: LayersModel; checkpoints: LayersModel[]; dispose(): void }> {
  const architecture = { arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 2, hidden: [16] } as const;
  const victim = createModel(architecture);
  const recorder = checkpointRecorder(victim, 11);
  await trainModel(victim, blobs(600, 1), { epochs: 8, batchSize: 32, learningRate: 0.01, seed: 3, onStep: recorder.onStep });
  const checkpoints = recorder.checkpoints.map((weights) => {
    const m = createModel(architecture);
    const tensors = weights.map((w, i) => tf.tensor(w, victim.getWeights()[i].shape));
    m.setWeights(tensors);
    tf.dispose(tensors);
    return m;
  });
  return {
    victim,
    checkpoints,
    dispose: () => {
      victim.dispose();
      for (const m of checkpoints) m.dispose();
    },
  };
}
