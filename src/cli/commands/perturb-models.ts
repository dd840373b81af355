/**
 * The part of `perturb` that runs networks: when the document carries no surrogate or
 * misinformation probabilities, compute them from the model inputs (--inputs) with saved models
 * (--surrogate / --surrogate-from / --surrogate-onnx [--reinit], --misinformation). Loaded only when asked for, so plain `perturb` starts fast.
 */
import { readFile } from 'node:fs/promises';
import type { ContextNeed, DefenseContext } from '../../defenses/index.js';
import { InvalidBatchError } from '../../defenses/index.js';
import { computeDefenseContextAsync, initBackend, loadModel, loadSurrogate, type ContextProviders } from '../../models/index.js';
import type { SurrogateSource } from '../flags/surrogate-flags.js';

export interface ModelContextOptions {
  inputsFile: string;
  surrogate?: SurrogateSource;
  misinformationDir?: string;
}

/** Reads model inputs: a JSON array of rows, or {"inputs": [[...]]}; all rows of one width. */
export async function readInputRows(file: string, expectedRows: number): Promise<Float32Array> {
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code) throw error;
    throw new InvalidBatchError(`${file}: not valid JSON (${(error as Error).message})`);
  }
  const rows = Array.isArray(doc) ? doc : (doc as { inputs?: unknown })?.inputs;
  if (!Array.isArray(rows)) throw new InvalidBatchError(`${file}: expected an array of input rows, or {"inputs": [[...]]}`);
  if (rows.length !== expectedRows) throw new InvalidBatchError(`${file}: ${rows.length} input rows for ${expectedRows} probability rows`);
  const width = Array.isArray(rows[0]) ? rows[0].length : 0;
  const data = new Float32Array(rows.length * width);
  rows.forEach((row: unknown, r) => {
    if (!Array.isArray(row) || row.length !== width) throw new InvalidBatchError(`${file}: input row ${r} must hold ${width} numbers like row 0`);
    row.forEach((v: unknown, c) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new InvalidBatchError(`${file}: input row ${r}, value ${c} is not a finite number`);
      data[r * width + c] = v;
    });
  });
  return data;
}

/** The context fields `needs` asks for that `present` lacks, computed with the given models. */
export async function modelContext(
  needs: readonly ContextNeed[],
  present: DefenseContext,
  rows: number,
  options: ModelContextOptions,
): Promise<DefenseContext> {
  const missing = needs.filter(
    (need) =>
      (need === 'surrogate' && !present.surrogateProbs) ||
      (need === 'surrogateGram' && !present.gram) ||
      (need === 'misinformation' && !present.misinformationProbs) ||
      (need === 'inputKey' && !present.inputKeys),
  );
  const inputs = await readInputRows(options.inputsFile, rows);
  if (missing.length === 0) return {};
  await initBackend();
  const providers: ContextProviders = {};
  try {
    if (options.surrogate) providers.surrogate = await loadSurrogate(options.surrogate);
    if (options.misinformationDir) providers.misinformation = await loadModel(options.misinformationDir);
    return await computeDefenseContextAsync(missing, inputs, rows, providers);
  } finally {
    providers.surrogate?.dispose();
    if (providers.misinformation && 'dispose' in providers.misinformation) providers.misinformation.dispose();
  }
}
