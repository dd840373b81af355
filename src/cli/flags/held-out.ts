/**
 * The owner's held-out examples, read as the serving layer reads requests: HODA's calibration
 * (--hoda-calibration) and the shadow attacker's scoring set (--shadow-held-out) share this loader.
 *
 * - IDX or .npy: values as the model takes them (uint8 and IDX scaled to 0..1), labels from the
 *   sibling file (`…images-idx3…` → `…labels-idx1…`, `x.npy` → `y.npy`, see eval/data/external-data.ts);
 * - an image folder: every .png/.jpg/.webp in it and its sub-folders, decoded with the serving
 *   preprocessing (--image-*) exactly as requests are; the labels are the class sub-folders (sorted
 *   names → 0..K−1).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { ServingOptionError } from '../../server/errors.js';
import type { InputOptions } from '../../server/inputs/index.js';

export interface HeldOutRows {
  x: Float32Array;
  rows: number;
  /** Values per row. */
  features: number;
  labels?: Int32Array;
  /** Where the rows came from, for a start line. */
  source: string;
}

export interface HeldOutReadOptions {
  /** The flag, for errors: e.g. "--hoda-calibration". */
  flag: string;
  /** Values per row the model takes, when known (checked). */
  width?: number;
  /** Who takes `width` values, with the verb, for errors (default "the model takes"). */
  taker?: string;
  /** The serving preprocessing (an image folder needs its `image`). */
  inputs?: InputOptions;
  /** Refuse data without labels. */
  requireLabels?: boolean;
}

const IMAGE_FILE = /\.(png|jpe?g|webp)$/i;

const fail = (message: string): never => {
  throw new ServingOptionError(message);
};

export async function readHeldOutRows(path: string, options: HeldOutReadOptions): Promise<HeldOutRows> {
  const { flag, width, inputs } = options;
  const info = await stat(path).catch(() => undefined);
  if (!info) return fail(`${flag} ${path}: file not found`);
  if (info.isDirectory()) {
    if (!inputs?.image)
      fail(`${flag} ${path} is an image folder: declare the model’s image preprocessing (--image-size WxH, ...) so the images are read as requests are`);
    const files = await imageFiles(path);
    if (files.length === 0) fail(`${flag} ${path}: no .png, .jpg or .webp images in it or its sub-folders`);
    const { createInputReader, resolveInputOptions } = await import('../../server/inputs/index.js');
    // The owner's own folder, not a request: its image count and total pixels are not capped (each image's limits still hold).
    const read = createInputReader({ ...resolveInputOptions(inputs), maxRequestPixels: Number.MAX_SAFE_INTEGER }, { maxRows: files.length });
    const images = await Promise.all(files.map(async (file) => (await readFile(file)).toString('base64')));
    const rows = await read({ kind: 'encoded-images', rows: images.length, images, where: path });
    if (width !== undefined && rows.cols !== width)
      fail(`${flag} ${path}: images decode to ${rows.cols} values, ${options.taker ?? 'the model takes'} ${width}`);
    // Labels: the class sub-folder each image lies in (sorted names → 0..K−1); none when an image lies at the top.
    const parts = files.map((file) => relative(path, file).split(sep));
    const labelled = parts.every((p) => p.length > 1);
    if (options.requireLabels && !labelled)
      fail(`${flag} ${path}: labels come from class sub-folders (one per class, sorted names → 0..K−1); put every image in one`);
    const names = labelled ? [...new Set(parts.map((p) => p[0]))].sort() : [];
    const labels = labelled ? Int32Array.from(parts, (p) => names.indexOf(p[0])) : undefined;
    return {
      x: rows.data,
      rows: rows.rows,
      features: rows.cols,
      labels,
      source: `${path} (${rows.rows} images${labels ? ` in ${names.length} classes` : ''})`,
    };
  }
  const { loadExternalImages } = await import('../../eval/data/external-data.js');
  try {
    const data = await loadExternalImages(path, { features: width, requireLabels: options.requireLabels });
    return { x: data.x, rows: data.rows, features: data.features, labels: data.labels, source: data.source };
  } catch (error) {
    return fail(`${flag}: ${(error as Error).message}`);
  }
}

/** Image files in `dir` and its sub-folders (one per class, as datasets are laid out), sorted. */
async function imageFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await imageFiles(full)));
    else if (IMAGE_FILE.test(entry.name)) found.push(full);
  }
  return found;
}
