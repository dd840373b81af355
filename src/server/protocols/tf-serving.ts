/**
 * TensorFlow Serving REST codec (:predict).
 * Answer, row format: {"predictions": [[p...], ...]} or {"predictions": [{"<outputKey>": [p...], ...}, ...]};
 * columnar format: {"outputs": [[p...], ...]} or {"outputs": {"<outputKey>": [[p...], ...], ...}}.
 * Request: {"instances": [x, ...]} (x a nested numeric array, or an object holding inputKey) or
 * {"inputs": [...] | {"<inputKey>": [...]}}.
 * In an object answer, keys other than outputKey are dropped unless listed in keepKeys (a "logits"
 * key would otherwise leak what the defense hides); top-level fields other than the answer are dropped.
 */
import type { ProbBatch } from '../../defenses/index.js';
import { AnswerFormatError, RequestFormatError, ServingOptionError } from '../errors.js';
import type { AnswerView, Codec, RequestInputs } from './codec.js';
import { inputsToRows, isRecord, looksEncoded, rowNumbers, rowsToBatch, rowsToImages, batchRows } from './numbers.js';

export interface TfServingOptions {
  /** Key of the probabilities when predictions are objects (e.g. "probabilities"). */
  outputKey?: string;
  /** Key of the model input when instances are objects (e.g. "image"). */
  inputKey?: string;
  /** Other keys of an object prediction to keep (e.g. "classes"); all others are dropped. */
  keepKeys?: readonly string[];
}

/** The configured key, or the only key; otherwise a problem statement for the error message. */
function pickKey(record: Record<string, unknown>, wanted: string | undefined, what: string, option: string): { key: string } | { problem: string } {
  const keys = Object.keys(record);
  if (wanted !== undefined) return wanted in record ? { key: wanted } : { problem: `${what} have no "${wanted}" key (keys: ${keys.join(', ')})` };
  if (keys.length === 1) return { key: keys[0] };
  return { problem: `${what} are objects with keys ${keys.join(', ')}; configure which one to read (${option})` };
}

function isB64Instance(value: Record<string, unknown>): boolean {
  return Object.keys(value).length === 1 && 'b64' in value;
}

export function tfServingCodec(options: TfServingOptions = {}): Codec {
  const keep = new Set(options.keepKeys ?? []);
  if (options.outputKey !== undefined && keep.has(options.outputKey)) {
    throw new ServingOptionError(`keepKeys lists "${options.outputKey}", the defended key itself; keepKeys is for other keys only`);
  }
  const answerError = (m: string) => new AnswerFormatError(`model answer: ${m}`);
  const requestError = (m: string) => new RequestFormatError(`request: ${m}`);
  const keyOf = (record: Record<string, unknown>, what: string): string => {
    const picked = pickKey(record, options.outputKey, what, 'outputKey');
    if ('problem' in picked) throw answerError(picked.problem);
    return picked.key;
  };
  const toBatch = (rows: readonly unknown[], where: string): ProbBatch => {
    const batch = rowsToBatch(rows);
    if (typeof batch === 'string') throw answerError(`"${where}": ${batch}`);
    return batch;
  };
  const keptFields = (record: Record<string, unknown>, key: string): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const name of Object.keys(record)) if (keep.has(name) && name !== key) out[name] = record[name];
    return out;
  };

  return {
    name: 'tf-serving',
    readAnswer(body: unknown): AnswerView {
      if (!isRecord(body)) throw answerError('expected a JSON object with "predictions" or "outputs"');
      if (Array.isArray(body.predictions)) {
        const predictions = body.predictions as unknown[];
        if (predictions.length > 0 && isRecord(predictions[0])) {
          const key = keyOf(predictions[0], 'predictions');
          const rows = predictions.map((p, r) => {
            if (!isRecord(p) || !(key in p)) throw answerError(`prediction ${r} has no "${key}"`);
            return p[key];
          });
          const batch = toBatch(rows, `predictions[].${key}`);
          return {
            batch,
            write: (defended) => ({
              predictions: predictions.map((p, r) => ({ ...keptFields(p as Record<string, unknown>, key), [key]: rowNumbers(defended, r) })),
            }),
          };
        }
        const batch = toBatch(predictions, 'predictions');
        return { batch, write: (defended) => ({ predictions: batchRows(defended) }) };
      }
      if (Array.isArray(body.outputs)) {
        const batch = toBatch(body.outputs, 'outputs');
        return { batch, write: (defended) => ({ outputs: batchRows(defended) }) };
      }
      if (isRecord(body.outputs)) {
        const outputs = body.outputs;
        const key = keyOf(outputs, 'outputs');
        if (!Array.isArray(outputs[key])) throw answerError(`"outputs.${key}" is not an array of rows`);
        const batch = toBatch(outputs[key] as unknown[], `outputs.${key}`);
        return { batch, write: (defended) => ({ outputs: { ...keptFields(outputs, key), [key]: batchRows(defended) } }) };
      }
      throw answerError('expected "predictions" (an array) or "outputs"');
    },
    readInputs(body: unknown): RequestInputs {
      if (!isRecord(body)) throw requestError('expected a JSON object with "instances" or "inputs"');
      let rows: unknown;
      if (Array.isArray(body.instances)) {
        const instances = body.instances as unknown[];
        // An instance {"b64": "..."} is itself the (binary) input; otherwise objects hold it under inputKey.
        rows =
          instances.length > 0 && isRecord(instances[0]) && !isB64Instance(instances[0])
            ? instances.map((instance, r) => {
                if (!isRecord(instance)) throw requestError(`instance ${r} is not an object like instance 0`);
                const picked = pickKey(instance, options.inputKey, `instance ${r}`, 'inputKey');
                if ('problem' in picked) throw requestError(picked.problem);
                return instance[picked.key];
              })
            : instances;
      } else if (Array.isArray(body.inputs)) {
        rows = body.inputs;
      } else if (isRecord(body.inputs)) {
        const picked = pickKey(body.inputs, options.inputKey, '"inputs"', 'inputKey');
        if ('problem' in picked) throw requestError(picked.problem);
        rows = body.inputs[picked.key];
      } else {
        throw requestError('expected "instances" (an array) or "inputs"');
      }
      if (!Array.isArray(rows)) throw requestError('the inputs are not an array of rows');
      if (rows.length > 0 && looksEncoded(rows[0])) {
        const images = rowsToImages(rows, false, 'the {"b64": ...} inputs');
        if (typeof images === 'string') throw requestError(images);
        return images;
      }
      const inputs = inputsToRows(rows);
      if (typeof inputs === 'string') throw requestError(inputs);
      return inputs;
    },
    errorBody: (message: string) => ({ error: message }),
  };
}
