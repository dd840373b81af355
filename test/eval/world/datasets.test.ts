import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readCache, writeCache } from '../../../src/eval/world/dataset-cache.js';
import { parseIdx } from '../../../src/eval/data/idx.js';
import { cacheRootFor, loadDataset, sliceSplit } from '../../../src/eval/world/datasets.js';

const scratch = mkdtempSync(join(tmpdir(), 'msd-datasets-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function idx(shape: number[], data: number[]): Uint8Array {
  const header = Buffer.alloc(4 + 4 * shape.length);
  header.writeUInt8(0x08, 2);
  header.writeUInt8(shape.length, 3);
  shape.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return new Uint8Array(Buffer.concat([header, Buffer.from(data)]));
}

describe('parseIdx', () => {
  it('reads the shape and the bytes', () => {
    const parsed = parseIdx(idx([2, 2, 1], [1, 2, 3, 4]), 'x');
    assert.deepEqual(parsed.shape, [2, 2, 1]);
    assert.deepEqual(Array.from(parsed.data), [1, 2, 3, 4]);
  });

  it('names the file when the magic or the length is wrong', () => {
    const wrongType = idx([2], [1, 2]);
    wrongType[2] = 0x0d;
    assert.throws(() => parseIdx(wrongType, 'labels.idx'), /labels\.idx: not an IDX file of unsigned bytes/);
    assert.throws(() => parseIdx(idx([3], [1, 2]), 'short.idx'), /short\.idx: shape \[3\] needs 3 bytes of data, the file holds 2/);
    assert.throws(() => parseIdx(new Uint8Array(2), 'tiny.idx'), /tiny\.idx: too short/);
  });
});

describe('dataset cache', () => {
  const dataset = {
    signature: 'sig-1',
    width: 2,
    train: { pixels: new Uint8Array([0, 255, 51, 102, 7, 8]), labels: new Uint8Array([1, 0, 3]), rows: 3 },
    test: { pixels: new Uint8Array([255, 0]), labels: new Uint8Array([2]), rows: 1 },
  };

  it('round-trips, scaling pixels to [0, 1], and reads only the rows asked for', async () => {
    const file = join(scratch, 'tiny.bin');
    await writeCache(file, dataset);
    const loaded = await readCache(file, 'sig-1');
    assert.ok(loaded);
    assert.deepEqual(
      Array.from(loaded.train.x),
      Array.from([0, 255, 51, 102, 7, 8], (v) => Math.fround(v / 255)),
    );
    assert.deepEqual(Array.from(loaded.train.labels), [1, 0, 3]);
    assert.deepEqual(Array.from(loaded.test.x), [1, 0]);
    const limited = await readCache(file, 'sig-1', { train: 1, test: 0 });
    assert.equal(limited?.train.rows, 1);
    assert.deepEqual(Array.from(limited!.train.x), [0, 1]);
    assert.equal(limited?.test.x.length, 0);
  });

  it('treats a stale, damaged or missing cache as absent', async () => {
    const file = join(scratch, 'stale.bin');
    await writeCache(file, dataset);
    assert.equal(await readCache(file, 'sig-2'), undefined);
    writeFileSync(file, 'MSDDATA1 and then garbage');
    assert.equal(await readCache(file, 'sig-1'), undefined);
    assert.equal(await readCache(join(scratch, 'none.bin'), 'sig-1'), undefined);
  });
});

describe('loadDataset', () => {
  it('loads MNIST (60k/10k, official order) and then reads it back from its cache', async () => {
    const cacheDir = join(scratch, 'mnist-cache');
    const lines: string[] = [];
    const first = await loadDataset('mnist', { cacheDir, log: (l) => lines.push(l) });
    assert.equal(lines.length, 1, 'the first load parses the package files');
    assert.equal(first.train.rows, 60000);
    assert.equal(first.test.rows, 10000);
    assert.equal(first.train.x.length, 60000 * 784);
    assert.deepEqual(first.inputShape, [28, 28, 1]);
    // The first labels of the official files.
    assert.deepEqual(Array.from(first.train.labels.subarray(0, 10)), [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert.deepEqual(Array.from(first.test.labels.subarray(0, 10)), [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    let min = Infinity;
    let max = -Infinity;
    for (const v of first.test.x) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
    assert.equal(min, 0);
    assert.equal(max, 1);
    const again = await loadDataset('mnist', { cacheDir, log: (l) => lines.push(l), limit: { train: 100, test: 50 } });
    assert.equal(lines.length, 1, 'the second load comes from the cache');
    assert.equal(again.train.rows, 100);
    assert.deepEqual(again.train.x, first.train.x.subarray(0, 100 * 784));
    assert.deepEqual(again.test.labels, first.test.labels.subarray(0, 50));
  });

  it('splits FashionMNIST 60k/10k, 1,000 test images per class, the same way every time', async () => {
    const dataset = await loadDataset('fashion-mnist');
    assert.equal(dataset.train.rows, 60000);
    assert.equal(dataset.test.rows, 10000);
    const testCounts = new Array(10).fill(0);
    for (const label of dataset.test.labels) testCounts[label]++;
    assert.deepEqual(testCounts, new Array(10).fill(1000));
    const trainCounts = new Array(10).fill(0);
    for (const label of dataset.train.labels) trainCounts[label]++;
    assert.deepEqual(trainCounts, new Array(10).fill(6000));
    assert.equal(dataset.classNames[9], 'Ankle boot');
    // The first rows already mix the classes (the split is shuffled).
    assert.ok(new Set(dataset.train.labels.subarray(0, 100)).size === 10);
    const again = await loadDataset('fashion-mnist', { limit: { train: 20 } });
    assert.deepEqual(again.train.labels, dataset.train.labels.subarray(0, 20));
    assert.deepEqual(again.train.x, dataset.train.x.subarray(0, 20 * 784));
  });

  it('rejects an unknown dataset name', async () => {
    await assert.rejects(loadDataset('cifar10' as never), /dataset "cifar10" is not one of mnist, fashion-mnist/);
  });

  it('sliceSplit takes the first rows without copying', () => {
    const split = { x: new Float32Array([1, 2, 3, 4, 5, 6]), labels: new Uint8Array([0, 1, 2]), rows: 3 };
    const sliced = sliceSplit(split, 2);
    assert.equal(sliced.rows, 2);
    assert.deepEqual(Array.from(sliced.x), [1, 2, 3, 4]);
    assert.equal(sliced.x.buffer, split.x.buffer);
    assert.equal(sliceSplit(split, 10).rows, 3);
  });
});

describe('cacheRootFor', () => {
  const home = join('/', 'home', 'ana');
  it('keeps the cache inside a checkout', () => {
    assert.equal(cacheRootFor(join('/', 'src', 'msd'), {}, home), join('/', 'src', 'msd', '.cache'));
  });
  it('moves it out of node_modules, which npm replaces on every install', () => {
    const installed = join('/', 'app', 'node_modules', 'model-stealing-defense');
    assert.equal(cacheRootFor(installed, {}, home), join(home, '.cache', 'model-stealing-defense'));
    assert.equal(cacheRootFor(installed, { XDG_CACHE_HOME: '/var/cache' }, home), join('/var/cache', 'model-stealing-defense'));
  });
  it('lets MSD_CACHE_DIR win everywhere', () => {
    const installed = join('/', 'app', 'node_modules', 'model-stealing-defense');
    assert.equal(cacheRootFor(installed, { MSD_CACHE_DIR: '/tmp/c' }, home), '/tmp/c');
    assert.equal(cacheRootFor('/src/msd', { MSD_CACHE_DIR: '/tmp/c' }, home), '/tmp/c');
  });
});
