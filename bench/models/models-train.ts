/**
 * Training throughput of the MNIST MLP (784-256-128-10), images per second, per backend and batch
 * size, next to two baselines measured in the same process:
 * - the matrix-product ceiling: the MLP step's FLOPs (≈ 1.0 MFLOP per image) divided by the
 *   GFLOP/s of the plain [B,784]×[784,256] product on that backend;
 * - the tfjs layers API's `fit` (batch 64), what a straightforward tfjs program gets.
 *
 *   npm run bench -- models-train [--backends wasm,cpu] [--batches 32,64,128,256] [--rows 12000] [--cpu-rows 2000]
 */
import { loadDataset } from '../../src/eval/world/datasets.js';
import { createModel, initBackend, tf, trainModel, type BackendName } from '../../src/models/index.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const backends = (args.get('backends') ?? 'wasm,cpu').split(',') as BackendName[];
const batchSizes = (args.get('batches') ?? '32,64,128,256').split(',').map(Number);
const rowsFor = (backend: string) => Number(backend === 'cpu' ? (args.get('cpu-rows') ?? 2000) : (args.get('rows') ?? 12000));

/** FLOPs of one training step per image: forward, weight gradients, and input gradients of layers 2 and 3. */
const LAYERS: [number, number][] = [
  [784, 256],
  [256, 128],
  [128, 10],
];
const forwardFlops = LAYERS.reduce((sum, [n, m]) => sum + 2 * n * m, 0);
const FLOPS_PER_IMAGE = 2 * forwardFlops + LAYERS.slice(1).reduce((sum, [n, m]) => sum + 2 * n * m, 0);

function matMulGflops(batch: number): number {
  return tf.tidy(() => {
    const a = tf.randomUniform([batch, 784]);
    const b = tf.randomUniform([784, 256]);
    for (let i = 0; i < 3; i++) tf.tidy(() => tf.matMul(a, b)).dispose();
    const reps = Math.max(10, Math.round(1e9 / (2 * batch * 784 * 256)));
    const start = performance.now();
    let last: tf.Tensor | undefined;
    for (let i = 0; i < reps; i++) {
      last?.dispose();
      last = tf.matMul(a, b);
    }
    last?.dataSync();
    last?.dispose();
    const ms = (performance.now() - start) / reps;
    return (2 * batch * 784 * 256) / ms / 1e6;
  });
}

async function fitImagesPerSecond(x: Float32Array, labels: Uint8Array, rows: number): Promise<number> {
  const model = createModel({ arch: 'mlp', inputShape: [784], classes: 10, seed: 1 });
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
  const xs = tf.tensor2d(x, [rows, 784]);
  const ys = tf.oneHot(tf.tensor1d(Int32Array.from(labels), 'int32'), 10).toFloat();
  const start = performance.now();
  await model.fit(xs, ys, { epochs: 1, batchSize: 64, shuffle: true, verbose: 0 });
  const seconds = (performance.now() - start) / 1000;
  xs.dispose();
  ys.dispose();
  model.dispose();
  return rows / seconds;
}

delete process.env.MSD_BACKEND;
const data = await loadDataset('mnist', { limit: { train: Math.max(...backends.map(rowsFor)), test: 0 } });
console.log(`MLP training step: ${(FLOPS_PER_IMAGE / 1e6).toFixed(2)} MFLOP per image`);
console.log('backend  batch  rows   lean img/s  ceiling img/s  lean/ceiling  matmul GFLOP/s  fit(64) img/s  lean/fit');
for (const backend of backends) {
  const info = await initBackend({ prefer: backend, log: () => {} });
  if (info.name !== backend) {
    console.log(`${backend}: unavailable (${info.failures.map((f) => `${f.backend}: ${f.reason}`).join('; ')})`);
    continue;
  }
  const rows = rowsFor(backend);
  const x = data.train.x.subarray(0, rows * 784);
  const labels = data.train.labels.subarray(0, rows);
  const fit = await fitImagesPerSecond(x, labels, rows);
  for (const batchSize of batchSizes) {
    const gflops = matMulGflops(batchSize);
    const ceiling = (gflops * 1e9) / FLOPS_PER_IMAGE;
    const model = createModel({ arch: 'mlp', inputShape: [784], classes: 10, seed: 1 });
    // One short warm-up epoch (kernel set-up, allocator growth), then the measured one.
    await trainModel(model, { x: x.subarray(0, 256 * 784), rows: 256, labels: labels.subarray(0, 256) }, { epochs: 1, batchSize });
    const before = tf.memory().numTensors;
    const result = await trainModel(model, { x, rows, labels }, { epochs: 1, batchSize });
    const leaked = tf.memory().numTensors - before;
    model.dispose();
    console.log(
      [
        backend.padEnd(7),
        String(batchSize).padStart(5),
        String(rows).padStart(6),
        result.imagesPerSecond.toFixed(0).padStart(11),
        ceiling.toFixed(0).padStart(14),
        (result.imagesPerSecond / ceiling).toFixed(2).padStart(13),
        gflops.toFixed(1).padStart(15),
        fit.toFixed(0).padStart(14),
        (result.imagesPerSecond / fit).toFixed(2).padStart(9),
        leaked ? `  (${leaked} tensors leaked!)` : '',
      ].join(' '),
    );
  }
}
