/**
 * The model owner's own data for `msd eval --target`: the attacker's transfer images and the
 * labelled test set, from
 *
 * - IDX files (the MNIST format; gzip too): images `…images-idx3-ubyte[.gz]`, labels from the file
 *   named with `labels-idx1` in place of `images-idx3` (or given explicitly);
 * - .npy arrays: images (N, …) of uint8 (0..255) or floats (0..1, or 0..scale), labels from the
 *   sibling file `y.npy` for `x.npy` (also `…_x.npy` → `…_y.npy`, `…images.npy` → `…labels.npy`) or given explicitly;
 * - an image folder with one sub-folder per class (sorted class names → indices 0..K−1), each image
 *   decoded with sharp to the declared size (default 28×28, 1 channel) and scaled to [0, 1].
 *
 * Everything is checked before any query: missing file, bad magic, wrong dimensions, label count ≠
 * image count, labels out of range, an empty folder, a file that is not an image.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseIdx } from './idx.js';
import { DataFileError } from './errors.js';
import { parseNpy } from './npy.js';

export interface ExternalImages {
  /** rows × features values in [0, 1], row-major. */
  x: Float32Array;
  rows: number;
  features: number;
  labels?: Int32Array;
  /** Class names of an image folder (sorted), index = label. */
  classNames?: string[];
  /** What was read, for the log. */
  source: string;
}

export interface ExternalDataOptions {
  /** The labels file (IDX or .npy); default: the sibling file named after the images (see above). */
  labels?: string;
  /** Labels are required (the test set). */
  requireLabels?: boolean;
  /** Labels must lie in 0..classes−1. */
  classes?: number;
  /** Values per image the endpoint expects (e.g. 784). */
  features?: number;
  /** Image folders: decoded size [height, width, channels] (default [28, 28, 1]). */
  imageShape?: readonly [number, number, number];
  /** Largest pixel value of float data (default 1; 255 for float arrays of 0..255). uint8 data is always /255. */
  scale?: number;
}

const IMAGE_EXTENSIONS = /\.(png|jpe?g|webp|gif|tiff?|bmp|avif)$/i;

export async function loadExternalImages(path: string, options: ExternalDataOptions = {}): Promise<ExternalImages> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new DataFileError(path, 'file not found');
  let images: ExternalImages;
  if (info.isDirectory()) images = await loadImageFolder(path, options);
  else {
    const raw = await readArrayFile(path);
    images = toImages(path, raw, options.scale);
    const labelsPath = options.labels ?? siblingLabels(path);
    if (options.labels && !existsSync(options.labels)) throw new DataFileError(options.labels, 'file not found');
    if (labelsPath && existsSync(labelsPath)) images.labels = toLabels(labelsPath, await readArrayFile(labelsPath), images.rows);
  }
  if (options.requireLabels && !images.labels) {
    throw new DataFileError(
      path,
      `no labels: give the labels file (expected ${info.isDirectory() ? 'one sub-folder per class' : (siblingLabels(path) ?? 'a labels file')})`,
    );
  }
  if (options.features !== undefined && images.features !== options.features) {
    throw new DataFileError(path, `images of ${images.features} values, the endpoint takes ${options.features} (wrong dimensions)`);
  }
  if (images.labels && options.classes !== undefined) {
    const bad = images.labels.findIndex((l) => l < 0 || l >= options.classes!);
    if (bad >= 0)
      throw new DataFileError(options.labels ?? siblingLabels(path) ?? path, `label ${images.labels[bad]} at row ${bad} is outside 0..${options.classes - 1}`);
  }
  return images;
}

/** The labels file a images file implies, or undefined. */
export function siblingLabels(path: string): string | undefined {
  const dir = dirname(path);
  const name = basename(path);
  const candidates = [
    name.replace(/images-idx3/, 'labels-idx1'),
    name.replace(/(^|[_-])x\.npy$/i, '$1y.npy'),
    name.replace(/images\.npy$/i, 'labels.npy'),
  ].filter((n) => n !== name);
  return candidates.length ? join(dir, candidates[0]) : undefined;
}

type RawArray = { shape: readonly number[]; data: ArrayLike<number>; bytes: boolean };

async function readArrayFile(path: string): Promise<RawArray> {
  let buffer: Uint8Array;
  try {
    buffer = new Uint8Array(await readFile(path));
  } catch (error) {
    throw new DataFileError(path, `cannot be read (${(error as Error).message})`);
  }
  if (buffer[0] === 0x1f && buffer[1] === 0x8b) {
    try {
      buffer = new Uint8Array(gunzipSync(buffer));
    } catch (error) {
      throw new DataFileError(path, `bad gzip data (${(error as Error).message})`);
    }
  }
  if (/\.npy(\.gz)?$/i.test(path)) {
    const array = parseNpy(buffer, path);
    return { shape: array.shape, data: array.data, bytes: array.dtype === 'u1' };
  }
  try {
    const array = parseIdx(buffer, path);
    return { shape: array.shape, data: array.data, bytes: true };
  } catch (error) {
    throw new DataFileError(path, `${(error as Error).message.replace(`${path}: `, '')} (IDX; .npy files must end in .npy)`);
  }
}

function toImages(path: string, raw: RawArray, scale = 1): ExternalImages {
  if (raw.shape.length < 2) throw new DataFileError(path, `images need a shape (N, …) of rank ≥ 2, got (${raw.shape.join(', ')}) (wrong dimensions)`);
  const rows = raw.shape[0];
  if (rows === 0) throw new DataFileError(path, 'holds no images');
  const features = raw.shape.slice(1).reduce((a, b) => a * b, 1);
  const x = new Float32Array(rows * features);
  const divide = raw.bytes ? 255 : scale;
  for (let i = 0; i < x.length; i++) {
    const v = raw.data[i];
    if (!Number.isFinite(v) || v < 0 || v > divide)
      throw new DataFileError(path, `pixel ${v} at value ${i} is outside 0..${divide}${raw.bytes ? '' : ' (float data: give the scale, e.g. 255)'}`);
    x[i] = v / divide;
  }
  return { x, rows, features, source: `${path} (${rows} images of ${raw.shape.slice(1).join('×')})` };
}

function toLabels(path: string, raw: RawArray, rows: number): Int32Array {
  const flat = raw.shape.length === 1 || (raw.shape.length === 2 && raw.shape[1] === 1);
  if (!flat) throw new DataFileError(path, `labels need a shape (N,), got (${raw.shape.join(', ')}) (wrong dimensions)`);
  if (raw.shape[0] !== rows) throw new DataFileError(path, `${raw.shape[0]} labels for ${rows} images`);
  const labels = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    const v = raw.data[i];
    if (!Number.isInteger(v)) throw new DataFileError(path, `label ${v} at row ${i} is not an integer`);
    labels[i] = v;
  }
  return labels;
}

async function loadImageFolder(root: string, options: ExternalDataOptions): Promise<ExternalImages> {
  const [height, width, channels] = options.imageShape ?? [28, 28, 1];
  const entries = await readdir(root, { withFileTypes: true });
  const classNames = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  const files: { file: string; label?: number }[] = [];
  if (classNames.length > 0) {
    for (const [label, name] of classNames.entries()) {
      const inside = (await readdir(join(root, name), { withFileTypes: true }))
        .filter((e) => e.isFile() && !e.name.startsWith('.'))
        .map((e) => e.name)
        .sort();
      if (inside.length === 0) throw new DataFileError(join(root, name), 'empty class folder');
      files.push(...inside.map((f) => ({ file: join(root, name, f), label })));
    }
  } else {
    files.push(
      ...entries
        .filter((e) => e.isFile() && !e.name.startsWith('.'))
        .map((e) => ({ file: join(root, e.name) }))
        .sort((a, b) => (a.file < b.file ? -1 : 1)),
    );
  }
  if (files.length === 0) throw new DataFileError(root, 'empty folder: expected one sub-folder per class holding images');
  const { default: sharp } = await import('sharp');
  const features = height * width * channels;
  const x = new Float32Array(files.length * features);
  for (const [i, { file }] of files.entries()) {
    if (!IMAGE_EXTENSIONS.test(file)) throw new DataFileError(file, 'not an image file (expected .png, .jpg, .webp, .gif, .tiff, .bmp or .avif)');
    let pixels: Buffer;
    try {
      let image = sharp(file).resize(width, height, { fit: 'fill' }).removeAlpha();
      image = channels === 1 ? image.greyscale() : image.toColourspace('srgb');
      pixels = await image.raw().toBuffer();
    } catch (error) {
      throw new DataFileError(file, `cannot be decoded as an image (${(error as Error).message})`);
    }
    if (pixels.length !== features) throw new DataFileError(file, `decoded to ${pixels.length} values, expected ${height}×${width}×${channels}`);
    for (let j = 0; j < features; j++) x[i * features + j] = pixels[j] / 255;
  }
  const labelled = classNames.length > 0;
  return {
    x,
    rows: files.length,
    features,
    labels: labelled ? Int32Array.from(files, (f) => f.label!) : undefined,
    classNames: labelled ? classNames : undefined,
    source: `${root} (${files.length} images${labelled ? ` in ${classNames.length} classes` : ''}, decoded to ${height}×${width}×${channels})`,
  };
}
