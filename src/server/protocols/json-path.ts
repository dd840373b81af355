/**
 * Codec for any JSON API: the probabilities and the inputs sit at configured paths.
 * Path syntax: "$.result.probs", "scores", "data[0].probs", "items[*].scores" (one [*] at most:
 * each match is one row). Without [*] the value is a list of rows, or a single row (written back
 * as a single row); the same holds for inputs (a list of rows, each flattened). Everything else in the body passes through as it is, so the paths must cover
 * every copy of the scores the model answers.
 */
import type { ProbBatch } from '../../defenses/index.js';
import { AnswerFormatError, RequestFormatError, ServingOptionError } from '../errors.js';
import type { AnswerView, Codec, RequestInputs } from './codec.js';
import { batchRows, inputsToRows, looksEncoded, rowNumbers, rowsToBatch, rowsToImages } from './numbers.js';

export interface JsonPathOptions {
  /** Where the probability rows are in the answer, e.g. "predictions[*].scores". */
  probsPath: string;
  /** Where the model inputs are in the request, e.g. "images"; needed by surrogate-based defenses. */
  inputsPath?: string;
}

type Step = string | number | '*';
const WILDCARD = '*';

export function parsePath(path: string): Step[] {
  if (typeof path !== 'string' || !path.trim()) throw new ServingOptionError('a json-path needs a path such as "predictions" or "items[*].scores"');
  const steps: Step[] = [];
  const pattern = /\.?([A-Za-z_][\w-]*)|\[(\d+|\*)\]/y;
  const rest = path.trim().replace(/^\$/, '');
  let at = 0;
  while (at < rest.length) {
    pattern.lastIndex = at;
    const match = pattern.exec(rest);
    if (!match) throw new ServingOptionError(`cannot read path "${path}" at "${rest.slice(at)}"; write it like "result.items[*].scores" or "outputs[0].data"`);
    if (match[1] !== undefined) steps.push(match[1]);
    else steps.push(match[2] === WILDCARD ? WILDCARD : Number(match[2]));
    at = pattern.lastIndex;
  }
  if (steps.length === 0) throw new ServingOptionError(`path "${path}" selects the whole body; name the field that holds the rows`);
  if (steps.filter((s) => s === WILDCARD).length > 1) throw new ServingOptionError(`path "${path}" has more than one [*]; only one is supported`);
  return steps;
}

function stepInto(value: unknown, step: Step): unknown {
  if (typeof step === 'number') return Array.isArray(value) ? value[step] : undefined;
  if (value && typeof value === 'object' && !Array.isArray(value)) return (value as Record<string, unknown>)[step as string];
  return undefined;
}

function describe(steps: readonly Step[]): string {
  return steps.map((s, i) => (typeof s === 'number' ? `[${s}]` : s === WILDCARD ? '[*]' : i === 0 ? s : `.${s}`)).join('');
}

/** The value at a path (no wildcard); undefined when missing. */
function getAt(root: unknown, steps: readonly Step[]): unknown {
  let value = root;
  for (const step of steps) value = stepInto(value, step);
  return value;
}

/** A copy of root with the value at the path replaced; containers along the path are copied, not mutated. */
function setAt(root: unknown, steps: readonly Step[], value: unknown): unknown {
  if (steps.length === 0) return value;
  const [step, ...rest] = steps;
  if (typeof step === 'number') {
    const copy = [...(root as unknown[])];
    copy[step] = setAt(copy[step], rest, value);
    return copy;
  }
  const record = root as Record<string, unknown>;
  return { ...record, [step]: setAt(record[step], rest, value) };
}

interface Located {
  /** One entry per row: the raw row values. */
  rows: unknown[];
  /** Whether the value was a single row (no [*], one-dimensional). */
  single: boolean;
  /** Rebuild the body with new rows (already JSON numbers). */
  rebuild(rows: number[][]): unknown;
}

function locate(root: unknown, steps: readonly Step[], fail: (m: string) => Error): Located {
  const star = steps.indexOf(WILDCARD);
  if (star < 0) {
    const value = getAt(root, steps);
    if (!Array.isArray(value)) throw fail(`"${describe(steps)}" is ${value === undefined ? 'missing' : 'not an array'}`);
    const single = value.length > 0 && !Array.isArray(value[0]);
    return { rows: single ? [value] : value, single, rebuild: (rows) => setAt(root, steps, single ? rows[0] : rows) };
  }
  const head = steps.slice(0, star);
  const tail = steps.slice(star + 1);
  const list = getAt(root, head);
  if (!Array.isArray(list)) throw fail(`"${describe(head)}" is ${list === undefined ? 'missing' : 'not an array'}`);
  const rows = list.map((item, i) => {
    const row = getAt(item, tail);
    if (row === undefined) throw fail(`"${describe(head)}[${i}]${tail.length ? describe(tail).replace(/^(?!\[)/, '.') : ''}" is missing`);
    return row;
  });
  return {
    rows,
    single: false,
    rebuild: (newRows) =>
      setAt(
        root,
        head,
        list.map((item, i) => setAt(item, tail, newRows[i])),
      ),
  };
}

/** Rows that are base64 images (strings, or {"b64": ...}) as EncodedImages; undefined when they are numbers. */
function encodedImages(rows: readonly unknown[], path: string, fail: (m: string) => Error): RequestInputs | undefined {
  if (rows.length === 0 || !looksEncoded(rows[0])) return undefined;
  const images = rowsToImages(rows, true, `"${path}"`);
  if (typeof images === 'string') throw fail(`"${path}": ${images}`);
  return images;
}

export function jsonPathCodec(options: JsonPathOptions): Codec {
  if (!options || typeof options.probsPath !== 'string')
    throw new ServingOptionError('the json-path protocol needs probsPath, e.g. { probsPath: "predictions[*].scores" }');
  const probsSteps = parsePath(options.probsPath);
  const inputSteps = options.inputsPath === undefined ? undefined : parsePath(options.inputsPath);
  const answerError = (m: string) => new AnswerFormatError(`model answer: ${m}`);
  const requestError = (m: string) => new RequestFormatError(`request: ${m}`);

  return {
    name: 'json-path',
    readAnswer(body: unknown): AnswerView {
      const located = locate(body, probsSteps, answerError);
      const batch = rowsToBatch(located.rows);
      if (typeof batch === 'string') throw answerError(`"${options.probsPath}": ${batch}`);
      return {
        batch,
        write(defended: ProbBatch) {
          return located.rebuild(located.single ? [rowNumbers(defended, 0)] : batchRows(defended));
        },
      };
    },
    readInputs(body: unknown): RequestInputs {
      if (!inputSteps) throw requestError('the json-path protocol was configured without inputsPath, so the inputs cannot be found');
      // Without [*], one base64 string is a single image and a list of them one image per row.
      if (!inputSteps.includes(WILDCARD)) {
        const value = getAt(body, inputSteps);
        const images = encodedImages(typeof value === 'string' ? [value] : Array.isArray(value) ? value : [], options.inputsPath!, requestError);
        if (images) return images;
      }
      const located = locate(body, inputSteps, requestError);
      const images = encodedImages(located.rows, options.inputsPath!, requestError);
      if (images) return images;
      const inputs = inputsToRows(located.rows);
      if (typeof inputs === 'string') throw requestError(`"${options.inputsPath}": ${inputs}`);
      return inputs;
    },
    errorBody: (message: string) => ({ error: message }),
  };
}
