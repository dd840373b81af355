/**
 * The attacker's side of the wire for an endpoint this project did not start: KServe V2 (Open
 * Inference Protocol), TensorFlow Serving REST, or any JSON API (json-path). Each client sends a
 * batch of images in one POST and reads one probability row per image back.
 *
 * Pixels leave as value × pixelScale: KServe V2 sends UINT8 (0..255) by default, or FP32 with
 * `pixelScale: 1`; TF Serving and json-path send numbers, [0, 1] by default. `inputShape` nests
 * each row (e.g. [28, 28, 1]); the default is a flat row.
 *
 * json-path: `requestTemplate` is a JSON text in which the string "$INPUTS" stands for the list of
 * rows (default `{"instances": "$INPUTS"}`); `answerPath` says where the probability rows are, in
 * the proxy's path syntax ("predictions", "outputs[0].data", "items[*].scores").
 */
import type { ProbBatch } from '../../defenses/index.js';
import { parsePath } from '../../server/protocols/json-path.js';
import { INPUT_NAME } from '../endpoint/defended-endpoint.js';
import { EndpointError, postWithRetry, type InferenceClient } from '../endpoint/kserve-client.js';

export type ExternalProtocol = 'kserve-v2' | 'tf-serving' | 'json-path';
export const EXTERNAL_PROTOCOLS: readonly ExternalProtocol[] = ['kserve-v2', 'tf-serving', 'json-path'];

export interface ExternalClientOptions {
  protocol: ExternalProtocol;
  url: string;
  /** Shape of one image as the endpoint takes it (default: flat). */
  inputShape?: readonly number[];
  /** Pixels are sent as value × pixelScale (default 255 for kserve-v2, as UINT8; 1 otherwise). */
  pixelScale?: number;
  /** KServe V2 input name (default "input"). */
  inputName?: string;
  /** TF Serving: key of the probabilities when predictions are objects. */
  outputKey?: string;
  /** json-path: the request body with "$INPUTS" where the rows go. */
  requestTemplate?: string;
  /** json-path: where the probability rows are in the answer. */
  answerPath?: string;
  headers?: Record<string, string>;
}

export class ClientOptionError extends Error {
  override name = 'ClientOptionError';
}

/** Checks the options once and returns the client (no request is sent). */
export function externalClient(options: ExternalClientOptions): InferenceClient {
  if (!EXTERNAL_PROTOCOLS.includes(options.protocol))
    throw new ClientOptionError(`protocol must be one of ${EXTERNAL_PROTOCOLS.join(', ')}, got "${String(options.protocol)}"`);
  try {
    new URL(options.url);
  } catch {
    throw new ClientOptionError(`target "${options.url}" is not a URL; write e.g. http://127.0.0.1:8080/v2/models/mnist/infer`);
  }
  const pixelScale = options.pixelScale ?? (options.protocol === 'kserve-v2' ? 255 : 1);
  if (!(pixelScale > 0)) throw new ClientOptionError(`pixel scale must be > 0, got ${pixelScale}`);
  const template = options.protocol === 'json-path' ? parseTemplate(options.requestTemplate ?? '{"instances": "$INPUTS"}') : undefined;
  const answerSteps = options.protocol === 'json-path' ? parsePath(options.answerPath ?? 'predictions') : undefined;
  const headers = { 'content-type': 'application/json', ...options.headers };
  let requests = 0;
  const encode = (x: Float32Array, rows: number, features: number): string => {
    const values = scaled(x, pixelScale);
    if (options.protocol === 'kserve-v2') {
      const datatype = pixelScale === 255 ? 'UINT8' : 'FP32';
      return JSON.stringify({
        inputs: [{ name: options.inputName ?? INPUT_NAME, shape: [rows, ...(options.inputShape ?? [features])], datatype, data: values }],
      });
    }
    const instances = Array.from({ length: rows }, (_, r) => nest(values.slice(r * features, (r + 1) * features), options.inputShape));
    if (options.protocol === 'tf-serving') return JSON.stringify({ instances });
    return JSON.stringify(fill(template, instances));
  };
  const decode = (body: unknown, rows: number): ProbBatch => {
    if (options.protocol === 'kserve-v2') return kserveRows(body, rows);
    if (options.protocol === 'tf-serving') return toBatch(tfServingRows(body, options.outputKey), rows);
    return toBatch(select(body, answerSteps!), rows);
  };
  return {
    get requests() {
      return requests;
    },
    async infer(x, rows, features) {
      requests += 1;
      const response = await postWithRetry(options.url, encode(x, rows, features), headers);
      const text = await response.text();
      if (!response.ok) throw new EndpointError(`${options.url} answered ${response.status}: ${text.slice(0, 300)}`);
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        throw new EndpointError(`${options.url} answered something that is not JSON: ${text.slice(0, 200)}`);
      }
      return decode(body, rows);
    },
  };
}

function scaled(x: Float32Array, scale: number): number[] {
  const out = new Array<number>(x.length);
  for (let i = 0; i < x.length; i++) out[i] = scale === 255 ? Math.max(0, Math.min(255, Math.round(x[i] * 255))) : x[i] * scale;
  return out;
}

/** A flat row as nested lists of `shape`. */
function nest(values: number[], shape: readonly number[] | undefined): unknown {
  if (!shape || shape.length <= 1) return values;
  const [, ...inner] = shape;
  const size = inner.reduce((a, b) => a * b, 1);
  return Array.from({ length: shape[0] }, (_, i) => nest(values.slice(i * size, (i + 1) * size), inner));
}

function parseTemplate(text: string): unknown {
  let template: unknown;
  try {
    template = JSON.parse(text);
  } catch (error) {
    throw new ClientOptionError(`the request template is not JSON: ${(error as Error).message}`);
  }
  if (!JSON.stringify(template).includes('"$INPUTS"'))
    throw new ClientOptionError('the request template must hold the string "$INPUTS" where the rows go, e.g. {"instances": "$INPUTS"}');
  return template;
}

function fill(template: unknown, rows: unknown[]): unknown {
  if (template === '$INPUTS') return rows;
  if (Array.isArray(template)) return template.map((t) => fill(t, rows));
  if (template && typeof template === 'object') return Object.fromEntries(Object.entries(template).map(([k, v]) => [k, fill(v, rows)]));
  return template;
}

function select(body: unknown, steps: ReturnType<typeof parsePath>): unknown[] {
  let values: unknown[] = [body];
  let wildcard = false;
  for (const step of steps) {
    if (step === '*') {
      wildcard = true;
      values = values.flatMap((v) => (Array.isArray(v) ? v : []));
    } else values = values.map((v) => (v && typeof v === 'object' ? (v as Record<string | number, unknown>)[step] : undefined));
  }
  if (wildcard) return values;
  if (!Array.isArray(values[0])) throw new EndpointError(`the answer has no list of rows at the answer path: ${JSON.stringify(body).slice(0, 200)}`);
  return values[0] as unknown[];
}

function tfServingRows(body: unknown, outputKey: string | undefined): unknown[] {
  const predictions = (body as { predictions?: unknown })?.predictions ?? (body as { outputs?: unknown })?.outputs;
  if (!Array.isArray(predictions)) throw new EndpointError(`the answer holds no "predictions" list: ${JSON.stringify(body).slice(0, 200)}`);
  if (predictions.length > 0 && predictions[0] && typeof predictions[0] === 'object' && !Array.isArray(predictions[0])) {
    const key = outputKey ?? Object.keys(predictions[0] as object)[0];
    return predictions.map((p) => (p as Record<string, unknown>)[key]);
  }
  return predictions;
}

function kserveRows(body: unknown, rows: number): ProbBatch {
  const outputs = (body as { outputs?: unknown })?.outputs;
  if (!Array.isArray(outputs) || outputs.length === 0)
    throw new EndpointError(`the endpoint answered without "outputs": ${JSON.stringify(body).slice(0, 200)}`);
  const { shape, data } = outputs[0] as { shape?: number[]; data?: unknown };
  const flat = (Array.isArray(data) ? data : []).flat(2) as unknown[];
  const cols = Array.isArray(shape) && shape.length === 2 && shape[0] === rows ? shape[1] : flat.length / rows;
  return toBatch(
    Array.from({ length: rows }, (_, r) => flat.slice(r * cols, (r + 1) * cols)),
    rows,
  );
}

function toBatch(rowsOut: unknown[], rows: number): ProbBatch {
  if (rowsOut.length !== rows) throw new EndpointError(`the endpoint answered ${rowsOut.length} rows for ${rows} images`);
  const first = rowsOut[0];
  if (!Array.isArray(first) || first.length < 2)
    throw new EndpointError(`an answer row is not a list of probabilities: ${JSON.stringify(first).slice(0, 100)}`);
  const cols = first.length;
  const data = new Float32Array(rows * cols);
  rowsOut.forEach((row, r) => {
    const flat = Array.isArray(row) ? (row.flat(2) as unknown[]) : [];
    if (flat.length !== cols) throw new EndpointError(`answer row ${r} holds ${flat.length} values, row 0 held ${cols}`);
    flat.forEach((v, c) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new EndpointError(`answer row ${r} holds a non-number: ${JSON.stringify(v)}`);
      data[r * cols + c] = v;
    });
  });
  return { rows, cols, data };
}
