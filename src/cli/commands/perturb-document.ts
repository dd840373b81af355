/**
 * The `perturb` command's document format, independent of files and processes:
 * in  {"probs": [[...]], "surrogateProbs"?: [[...]], "misinformationProbs"?: [[...]], "inputKeys"?: ["..."]}
 * out {"probs": [[...]], "l1": [...], "top1Changed": [...]}
 */
import { batchFromRows, batchToRows, InvalidBatchError, utilityCost, type Defense, type DefenseContext, type ProbBatch } from '../../defenses/index.js';
import { shortestFloat32 } from '../../server/protocols/numbers.js';

export interface PerturbInput {
  probs: ProbBatch;
  context: DefenseContext;
}

export interface PerturbOutput {
  probs: number[][];
  l1: number[];
  top1Changed: boolean[];
}

const KNOWN_FIELDS = new Set(['probs', 'surrogateProbs', 'misinformationProbs', 'inputKeys']);

function readRows(doc: Record<string, unknown>, field: string): ProbBatch | undefined {
  const value = doc[field];
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new InvalidBatchError(`"${field}" must be an array of rows`);
  try {
    return batchFromRows(value as number[][]);
  } catch (error) {
    if (error instanceof InvalidBatchError) throw new InvalidBatchError(`"${field}": ${error.message}`);
    throw error;
  }
}

export function readPerturbInput(text: string): PerturbInput {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    throw new InvalidBatchError(`input is not valid JSON (${(error as Error).message})`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new InvalidBatchError('input must be a JSON object with a "probs" field');
  const record = doc as Record<string, unknown>;
  const unknown = Object.keys(record).filter((key) => !KNOWN_FIELDS.has(key));
  if (unknown.length) throw new InvalidBatchError(`unknown field(s) ${unknown.map((k) => `"${k}"`).join(', ')}; allowed: ${[...KNOWN_FIELDS].join(', ')}`);
  const probs = readRows(record, 'probs');
  if (!probs) throw new InvalidBatchError('input needs a "probs" field: an array of probability rows');
  const context: DefenseContext = {};
  const surrogate = readRows(record, 'surrogateProbs');
  if (surrogate) context.surrogateProbs = surrogate;
  const misinformation = readRows(record, 'misinformationProbs');
  if (misinformation) context.misinformationProbs = misinformation;
  if (record.inputKeys !== undefined) {
    const keys = record.inputKeys;
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw new InvalidBatchError('"inputKeys" must be an array of strings');
    context.inputKeys = keys;
  }
  return { probs, context };
}

export function perturbBatch(defense: Defense, input: PerturbInput): PerturbOutput {
  const defended = defense.apply(input.probs, input.context);
  const cost = utilityCost(input.probs, defended);
  return {
    probs: batchToRows(defended).map((row) => row.map(shortestFloat32)),
    l1: Array.from(cost.l1),
    top1Changed: Array.from(cost.top1Changed, (v) => v === 1),
  };
}
