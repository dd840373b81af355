/**
 * Open Inference Protocol (KServe V2) codec.
 * Answer: {"model_name", "outputs": [{"name", "shape": [B, K], "datatype": "FP32"|"FP64"|"FP16", "data": [...]}]},
 * data flat (row-major) or nested; written back in the form it came in.
 * Request: {"inputs": [{"name", "shape": [B, ...], "datatype", "data": [...]}]}.
 * Outputs other than the defended one are dropped unless listed in keepOutputs (a second output such
 * as raw logits would otherwise leak what the defense hides); unknown top-level fields are dropped too.
 * So are the keys of "parameters" (top-level and in every output written back) not listed in
 * keepParameters: a model server may put anything there, raw scores included.
 */
import type { ProbBatch } from '../../defenses/index.js';
import { AnswerFormatError, RequestFormatError, ServingOptionError } from '../errors.js';
import type { AnswerView, Codec, RequestInputs } from './codec.js';
import { batchFlat, batchRows, flattenNumbers, isRecord, MAX_NESTING, rowsToImages } from './numbers.js';

export interface KServeV2Options {
  /** Name of the output holding the probabilities; required when the model answers several outputs. */
  outputName?: string;
  /** Name of the input tensor a surrogate reads; required when the request holds several inputs. */
  inputName?: string;
  /** Other outputs to keep in the answer (e.g. a label); all others are dropped. */
  keepOutputs?: readonly string[];
  /** Keys of "parameters" (top-level and per output) to keep in the answer (e.g. "content_type"); all others are dropped. */
  keepParameters?: readonly string[];
}

const FLOAT_TYPES = new Set(['FP32', 'FP64', 'FP16', 'BF16']);
const NUMERIC_TYPES = new Set([...FLOAT_TYPES, 'INT8', 'INT16', 'INT32', 'INT64', 'UINT8', 'UINT16', 'UINT32', 'UINT64']);
/** Top-level answer fields kept as they are; "parameters" is kept reduced to keepParameters. */
const RESPONSE_FIELDS = ['model_name', 'model_version', 'id'];

interface Tensor {
  name: string;
  shape: number[];
  datatype: string;
  data: unknown[];
}

function pickTensor(list: unknown, wanted: string | undefined, kind: 'output' | 'input', fail: (m: string) => Error): Tensor {
  const field = `${kind}s`;
  if (!Array.isArray(list) || list.length === 0)
    throw fail(`expected a KServe V2 ${kind === 'output' ? 'inference response' : 'inference request'} with a non-empty "${field}" array`);
  const names = list.map((t) => (isRecord(t) ? String(t.name) : '?'));
  let chosen: unknown;
  if (wanted !== undefined) {
    chosen = list.find((t) => isRecord(t) && t.name === wanted);
    if (!chosen) throw fail(`no ${kind} named "${wanted}" (${field}: ${names.join(', ')})`);
  } else if (list.length === 1) {
    chosen = list[0];
  } else {
    throw fail(
      `the ${kind}s are ${names.join(', ')}; configure which one holds the ${kind === 'output' ? 'probabilities (outputName)' : 'model input (inputName)'}`,
    );
  }
  if (!isRecord(chosen)) throw fail(`${kind} is not an object`);
  const { shape, datatype, data } = chosen;
  const label = `${kind} "${String(chosen.name)}"`;
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d >= 0))
    throw fail(`${label} needs "shape", an array of non-negative integers`);
  if (shape.length > MAX_NESTING) throw fail(`${label} has ${shape.length} dimensions; at most ${MAX_NESTING} are accepted`);
  if (typeof datatype !== 'string') throw fail(`${label} needs a "datatype"`);
  if (!Array.isArray(data)) throw fail(`${label} needs a "data" array`);
  return { name: String(chosen.name), shape: shape as number[], datatype, data };
}

function tensorValues(tensor: Tensor, expected: number, label: string, fail: (m: string) => Error): { values: Float32Array; nested: boolean } {
  const data = tensor.data as unknown[];
  const nested = data.length > 0 && Array.isArray(data[0]);
  const notNumbers = () => fail(`${label} "data" holds something other than numbers`);
  if (!nested && data.length === expected) {
    // The common case, a flat list: straight into float32, no intermediate array.
    const values = new Float32Array(expected);
    for (let i = 0; i < expected; i++) {
      const v = data[i];
      if (typeof v !== 'number') throw notNumbers();
      values[i] = v;
    }
    return { values, nested };
  }
  const flat: number[] = [];
  const problem = flattenNumbers(data, flat);
  if (problem === 'too-deep') throw fail(`${label} "data" is nested deeper than ${MAX_NESTING} levels`);
  if (problem) throw notNumbers();
  if (flat.length !== expected) throw fail(`${label} has ${flat.length} values but shape [${tensor.shape.join(', ')}] needs ${expected}`);
  return { values: Float32Array.from(flat), nested };
}

/** A BYTES tensor of shape [B] or [B, 1]: one base64 image per row (JSON strings, flat or nested). */
function bytesImages(input: Tensor, label: string, fail: (m: string) => Error): RequestInputs {
  const rows = input.shape[0];
  if (rows < 1 || input.shape.slice(1).some((d) => d !== 1))
    throw fail(`${label} is a BYTES tensor of shape [${input.shape.join(', ')}]; images go as shape [batch] or [batch, 1], one base64 string each`);
  const strings = (input.data as unknown[]).flat(input.shape.length);
  if (strings.length !== rows) throw fail(`${label} has ${strings.length} elements but shape [${input.shape.join(', ')}] needs ${rows}`);
  const images = rowsToImages(strings, true, label);
  if (typeof images === 'string') throw fail(`${label}: ${images}`);
  return images;
}

/** A "parameters" object with only the keys in `keep`; undefined when none is left. */
function keptParameters(parameters: unknown, keep: ReadonlySet<string>): Record<string, unknown> | undefined {
  if (keep.size === 0 || !isRecord(parameters)) return undefined;
  const out: Record<string, unknown> = {};
  let any = false;
  for (const key of Object.keys(parameters)) {
    if (!keep.has(key)) continue;
    out[key] = parameters[key];
    any = true;
  }
  return any ? out : undefined;
}

/** The fields of a tensor the V2 protocol defines; any other field an upstream adds could carry the original numbers. */
const TENSOR_FIELDS = ['name', 'shape', 'datatype', 'data'] as const;

/** A tensor as written back: the protocol's fields only, its parameters reduced to the kept keys (the field left out when none is). */
function withKeptParameters(tensor: Record<string, unknown>, keep: ReadonlySet<string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of TENSOR_FIELDS) if (tensor[field] !== undefined) out[field] = tensor[field];
  const kept = keptParameters(tensor.parameters, keep);
  if (kept) out.parameters = kept;
  return out;
}

export function kserveV2Codec(options: KServeV2Options = {}): Codec {
  const keep = new Set(options.keepOutputs ?? []);
  if (options.outputName !== undefined && keep.has(options.outputName)) {
    throw new ServingOptionError(`keepOutputs lists "${options.outputName}", the defended output itself; keepOutputs is for other outputs only`);
  }
  const parametersOption: unknown = options.keepParameters;
  if (parametersOption !== undefined && (!Array.isArray(parametersOption) || !parametersOption.every((k) => typeof k === 'string' && k !== ''))) {
    throw new ServingOptionError(`keepParameters must be a list of parameter names, e.g. ["content_type"], got ${JSON.stringify(parametersOption)}`);
  }
  const keepParameters: ReadonlySet<string> = new Set(options.keepParameters ?? []);
  const answerError = (m: string) => new AnswerFormatError(`model answer: ${m}`);
  const requestError = (m: string) => new RequestFormatError(`request: ${m}`);

  return {
    name: 'kserve-v2',
    readAnswer(body: unknown): AnswerView {
      if (!isRecord(body)) throw answerError('expected a JSON object with an "outputs" array');
      const output = pickTensor(body.outputs, options.outputName, 'output', answerError);
      const label = `output "${output.name}"`;
      if (!FLOAT_TYPES.has(output.datatype)) throw answerError(`${label} has datatype ${output.datatype}; probabilities must be FP32, FP64, FP16 or BF16`);
      if (output.shape.length !== 2) throw answerError(`${label} has shape [${output.shape.join(', ')}]; expected [batch, classes]`);
      const [rows, cols] = output.shape;
      if (rows < 1 || cols < 2) throw answerError(`${label} has shape [${rows}, ${cols}]; expected at least one row of at least 2 classes`);
      const { values, nested } = tensorValues(output, rows * cols, label, answerError);
      const batch: ProbBatch = { rows, cols, data: values };
      const original = body;
      return {
        batch,
        write(defended: ProbBatch) {
          const replaced = withKeptParameters(
            {
              ...(original.outputs as Record<string, unknown>[]).find((t) => t.name === output.name),
              data: nested ? batchRows(defended) : batchFlat(defended),
            },
            keepParameters,
          );
          const outputs = (original.outputs as Record<string, unknown>[]).flatMap((t) =>
            t.name === output.name ? [replaced] : isRecord(t) && keep.has(String(t.name)) ? [withKeptParameters(t, keepParameters)] : [],
          );
          const out: Record<string, unknown> = {};
          for (const field of RESPONSE_FIELDS) if (original[field] !== undefined) out[field] = original[field];
          const parameters = keptParameters(original.parameters, keepParameters);
          if (parameters) out.parameters = parameters;
          out.outputs = outputs;
          return out;
        },
      };
    },
    readInputs(body: unknown): RequestInputs {
      if (!isRecord(body)) throw requestError('expected a JSON object with an "inputs" array');
      const input = pickTensor(body.inputs, options.inputName, 'input', requestError);
      const label = `input "${input.name}"`;
      if (input.datatype === 'BYTES') return bytesImages(input, label, requestError);
      if (!NUMERIC_TYPES.has(input.datatype))
        throw requestError(`${label} has datatype ${input.datatype}; a numeric tensor or a BYTES tensor of base64 images is needed`);
      const rows = input.shape[0];
      const cols = input.shape.slice(1).reduce((a, b) => a * b, 1);
      if (rows < 1 || cols < 1) throw requestError(`${label} has shape [${input.shape.join(', ')}]; expected [batch, features...] with at least one row`);
      const { values } = tensorValues(input, rows * cols, label, requestError);
      return { rows, cols, data: values, datatype: input.datatype, shape: input.shape.slice(1) };
    },
    errorBody: (message: string) => ({ error: message }),
  };
}
