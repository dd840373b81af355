/**
 * Conv training speed: the knockoff CNN (two 5×5 convolutions of 32 and 64 channels, 2×2 pooling,
 * dense 256) trained by this project's loop on each engine (the active tfjs backend; onnxruntime-node
 * on one thread and on all cores, when installed), against Debian's PyTorch (/usr/bin/python3, one
 * thread and all threads) on the same random data, in the same run. Both wall-clock and CPU-time
 * rates are printed: on a shared machine the CPU-time ratio is the fair one.
 * Usage: npm run bench -- models-cnn [rows=2048] [batch=128]
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createModel, initBackend, loadOnnxRuntime, trainModel, type TrainEngine } from '../../src/models/index.js';

import { seededRandom } from '../../src/models/random.js';

const rows = Number(process.argv[2] ?? 2048);
const batchSize = Number(process.argv[3] ?? 128);
const info = await initBackend({ log: () => {} });
const random = seededRandom(1);
const x = Float32Array.from({ length: rows * 784 }, () => random());
const labels = Int32Array.from({ length: rows }, () => Math.floor(random() * 10));

interface Measured {
  label: string;
  wall: number;
  cpu: number;
}
const measured: Measured[] = [];
const engines: { engine: TrainEngine; threads: number }[] = [{ engine: 'tfjs', threads: 1 }];
if (
  await loadOnnxRuntime().then(
    () => true,
    () => false,
  )
)
  engines.push({ engine: 'onnxruntime', threads: 1 }, { engine: 'onnxruntime', threads: availableParallelism() });
else console.log('onnxruntime-node: not installed, tfjs only');
for (const { engine, threads } of engines) {
  const model = createModel({ arch: 'cnn', inputShape: [784], classes: 10, seed: 1 });
  // A short warm-up (kernel set-up, allocator growth), then the measured epoch.
  await trainModel(model, { x: x.subarray(0, 256 * 784), rows: 256, labels: labels.subarray(0, 256) }, { epochs: 1, batchSize, engine, threads });
  const cpuBefore = process.cpuUsage();
  const result = await trainModel(model, { x, rows, labels }, { epochs: 1, batchSize, engine, threads });
  const cpu = process.cpuUsage(cpuBefore);
  model.dispose();
  const label = engine === 'tfjs' ? `tfjs ${info.name} (${info.threads} thread${info.threads === 1 ? '' : 's'})` : result.backend;
  measured.push({ label, wall: result.imagesPerSecond, cpu: rows / ((cpu.user + cpu.system) / 1e6) });
}
console.log(`knockoff CNN (32-64 conv, dense 256), ${rows} images, batch ${batchSize}`);
for (const m of measured) console.log(`${m.label}, this project's loop: ${m.wall.toFixed(0)} img/s wall, ${m.cpu.toFixed(0)} img/CPU-s`);

const python = '/usr/bin/python3';
const script = fileURLToPath(new URL('./_torch-cnn.py', import.meta.url));
if (!existsSync(python)) {
  console.log(`PyTorch: ${python} not found, no baseline`);
} else {
  for (const threads of [1, 0]) {
    const run = spawnSync(python, [script, String(rows), String(batchSize), String(threads)], { encoding: 'utf8' });
    if (run.status !== 0) {
      console.log(`PyTorch: failed (${(run.stderr || run.stdout).trim().split('\n').pop()})`);
      break;
    }
    const {
      imagesPerSecond,
      imagesPerCpuSecond,
      threads: used,
      version,
    } = JSON.parse(run.stdout.trim().split('\n').pop()!) as { imagesPerSecond: number; imagesPerCpuSecond: number; threads: number; version: string };
    console.log(
      `PyTorch ${version} (${used} thread${used === 1 ? '' : 's'}): ${imagesPerSecond.toFixed(0)} img/s wall, ${imagesPerCpuSecond.toFixed(0)} img/CPU-s`,
    );
    for (const m of measured)
      console.log(
        `  ${m.label} / PyTorch ${used} thread${used === 1 ? '' : 's'}: ${(m.wall / imagesPerSecond).toFixed(2)}× wall, ${(m.cpu / imagesPerCpuSecond).toFixed(2)}× CPU`,
      );
  }
}
