/**
 * Surrogates for real models: what one image costs.
 * - nsfwjs's MobileNetV2 re-initialised from a seed (TfjsSurrogate, the model's own forward pass) on
 *   224×224×3 inputs, ms per image at batch 1, 8, 32 on tfjs-wasm; batch 1 (and 2) on tfjs-cpu;
 * - a MobileNetV2-sized ONNX model written with the project's encoder (see _onnx-mobilenet.ts), seeded
 *   by reinitOnnx, on onnxruntime-node at batch 1, 8, 32;
 * - nsfwjs's MobileNetV2 re-initialised and converted to ONNX (engine 'onnx'), with onnxruntime's
 *   default threads and with one, wall and CPU ms per image;
 * - the longest event-loop stall while 32 images go through probsAsync (chunks of 1, the default at this size, vs 8);
 * - full-Jacobian Gram matrices per image on a small functional model (conv, batch norm, depthwise
 *   conv, residual add, 16×16×3, 10 classes), against its forward pass as the baseline.
 *
 *   npm run bench -- models-surrogates [--cpu-images 1] [--skip-cpu]
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { initBackend, loadSurrogate, tf, type SurrogateModel } from '../../src/models/index.js';
import { mobilenetV2Onnx } from './_onnx-mobilenet.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i++) {
  const [key, value] = [process.argv[i].replace(/^--/, ''), process.argv[i + 1]];
  if (value === undefined || value.startsWith('--')) args.set(key, 'true');
  else {
    args.set(key, value);
    i++;
  }
}
const cpuImages = Number(args.get('cpu-images') ?? 1);
const NSFW = 'node_modules/nsfwjs/dist/models/mobilenet_v2';
const PIXELS = 224 * 224 * 3;

function images(rows: number): Float32Array {
  const out = new Float32Array(rows * PIXELS);
  for (let i = 0; i < out.length; i++) out[i] = 0.5 + 0.5 * Math.sin(i * 0.37);
  return out;
}

/** ms per image of probsAsync at `batch` (one warm-up call at batch 1 per surrogate is done by the caller). */
async function msPerImage(surrogate: SurrogateModel, batch: number, repeats = 1): Promise<number> {
  const x = images(batch);
  const start = performance.now();
  for (let r = 0; r < repeats; r++) await surrogate.probsAsync(x, batch);
  return (performance.now() - start) / (batch * repeats);
}

async function stallMs(surrogate: SurrogateModel, rows: number): Promise<number> {
  const x = images(rows);
  const histogram = monitorEventLoopDelay({ resolution: 5 });
  const tick = () => new Promise((resolve) => setTimeout(resolve, 25));
  histogram.enable();
  // The sampling timer must be running before the work starts, and fire once after it.
  await tick();
  await surrogate.probsAsync(x, rows);
  await tick();
  histogram.disable();
  return histogram.max / 1e6;
}

delete process.env.MSD_BACKEND;
const log = (line: string) => console.log(line);

// tfjs-wasm
await initBackend({ prefer: 'wasm', log: () => {} });
let started = performance.now();
const wasmSurrogate = await loadSurrogate({ dir: NSFW, reinit: 1 });
log(`MobileNetV2 (nsfwjs topology, reinit seed 1): built in ${(performance.now() - started).toFixed(0)} ms`);
await wasmSurrogate.probsAsync(images(1), 1);
const wasm: Record<number, number> = {};
for (const batch of [1, 8, 32]) {
  wasm[batch] = await msPerImage(wasmSurrogate, batch, batch === 1 ? 3 : 1);
  log(`tfjs-${tf.getBackend()}  MobileNetV2 batch ${String(batch).padStart(2)}: ${wasm[batch].toFixed(1)} ms/image`);
}
for (const chunk of [1, 8]) {
  const surrogate = await loadSurrogate({ dir: NSFW, reinit: 1, chunkRows: chunk });
  await surrogate.probsAsync(images(1), 1);
  log(`tfjs-${tf.getBackend()}  32 images in chunks of ${chunk}: longest event-loop stall ${(await stallMs(surrogate, 32)).toFixed(0)} ms`);
  surrogate.dispose();
}

// tfjs-cpu (slow: a couple of images)
if (args.get('skip-cpu') !== 'true') {
  await tf.setBackend('cpu');
  const cpuSurrogate = await loadSurrogate({ dir: NSFW, reinit: 1 });
  started = performance.now();
  await cpuSurrogate.probsAsync(images(1), 1);
  log(`tfjs-cpu   MobileNetV2 first image (warm-up): ${(performance.now() - started).toFixed(0)} ms`);
  const cpu = await msPerImage(cpuSurrogate, cpuImages);
  log(`tfjs-cpu   MobileNetV2 batch ${cpuImages}: ${cpu.toFixed(0)} ms/image (${(cpu / wasm[1]).toFixed(1)}× wasm batch 1)`);
  cpuSurrogate.dispose();
  await initBackend({ prefer: 'wasm', log: () => {} });
}
wasmSurrogate.dispose();

// onnxruntime-node
started = performance.now();
const onnxBytes = mobilenetV2Onnx();
const onnx = await loadSurrogate({ onnx: onnxBytes, reinit: 1 });
log(
  `ONNX MobileNetV2-sized model: ${(onnxBytes.length / 1e6).toFixed(1)} MB written, re-initialised and loaded in ${(performance.now() - started).toFixed(0)} ms`,
);
await onnx.probsAsync(images(1), 1);
for (const batch of [1, 8, 32]) {
  const ms = await msPerImage(onnx, batch, batch === 1 ? 5 : 1);
  log(
    `onnxruntime-node MobileNetV2-sized batch ${String(batch).padStart(2)}: ${ms.toFixed(1)} ms/image (${(wasm[batch] / ms).toFixed(1)}× faster than tfjs-wasm)`,
  );
}
onnx.dispose();
// nsfwjs's own MobileNetV2 topology, re-initialised on TF.js and converted (engine 'onnx'), with onnxruntime's default threads and with 1.
for (const threads of [undefined, 1]) {
  started = performance.now();
  const converted = await loadSurrogate({ dir: NSFW, reinit: 1, engine: 'onnx', threads });
  log(`engine onnx (nsfwjs MobileNetV2 converted${threads ? `, ${threads} thread` : ''}): loaded in ${(performance.now() - started).toFixed(0)} ms`);
  await converted.probsAsync(images(1), 1);
  for (const batch of [1, 8, 32]) {
    const cpuBefore = process.cpuUsage();
    const ms = await msPerImage(converted, batch, batch === 1 ? 5 : 1);
    const cpu = process.cpuUsage(cpuBefore);
    const cpuMs = (cpu.user + cpu.system) / 1000 / (batch * (batch === 1 ? 5 : 1));
    log(
      `engine onnx${threads ? ' 1 thread' : ''} MobileNetV2 batch ${String(batch).padStart(2)}: ${ms.toFixed(1)} ms/image, CPU ${cpuMs.toFixed(1)} ms/image (${(wasm[batch] / ms).toFixed(1)}× faster than tfjs-wasm)`,
    );
  }
  converted.dispose();
}
for (const chunk of [1, 8]) {
  const surrogate = await loadSurrogate({ onnx: onnxBytes, reinit: 1, chunkRows: chunk });
  await surrogate.probsAsync(images(1), 1);
  log(`onnxruntime-node 32 images in chunks of ${chunk}: longest event-loop stall ${(await stallMs(surrogate, 32)).toFixed(0)} ms`);
  surrogate.dispose();
}

// Gram matrices (jacobian=full) on a small functional model
function smallFunctional(): tf.LayersModel {
  const input = tf.input({ shape: [16, 16, 3] });
  let x = tf.layers
    .conv2d({ filters: 8, kernelSize: 3, strides: 2, padding: 'same', kernelInitializer: tf.initializers.heUniform({ seed: 1 }) })
    .apply(input) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization().apply(x) as tf.SymbolicTensor;
  x = tf.layers.reLU({ maxValue: 6 }).apply(x) as tf.SymbolicTensor;
  const branch = tf.layers
    .depthwiseConv2d({ kernelSize: 3, padding: 'same', depthwiseInitializer: tf.initializers.heUniform({ seed: 2 }) })
    .apply(x) as tf.SymbolicTensor;
  x = tf.layers.add().apply([x, branch]) as tf.SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 10, kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}
for (const backend of ['wasm', 'cpu'] as const) {
  await tf.setBackend(backend);
  const surrogate = await loadSurrogate({ model: smallFunctional(), usePlan: false });
  const rows = 8;
  const x = new Float32Array(rows * 768).map((_, i) => Math.sin(i));
  await surrogate.gramAsync!(x.subarray(0, 768), 1);
  await surrogate.probsAsync(x, rows);
  started = performance.now();
  await surrogate.probsAsync(x, rows);
  const forward = (performance.now() - started) / rows;
  started = performance.now();
  await surrogate.gramAsync!(x, rows);
  const gram = (performance.now() - started) / rows;
  const params = (surrogate as unknown as { model: tf.LayersModel }).model.countParams();
  log(
    `tfjs-${backend}  Gram (K=10, ${params} parameters) ${gram.toFixed(1)} ms/image, forward ${forward.toFixed(2)} ms/image (baseline): ${(gram / forward).toFixed(0)}×`,
  );
  surrogate.dispose();
}
