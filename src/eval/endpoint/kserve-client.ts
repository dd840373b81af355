/**
 * The attacker's side of the wire: sends image rows to a KServe V2 (Open Inference Protocol)
 * endpoint in batched requests and reads the probability rows back. Pixels travel as UINT8
 * (0..255), which keeps a 256-image request around 0.6 MB of JSON instead of 3 MB of floats.
 */
import type { ProbBatch } from '../../defenses/index.js';
import { INPUT_NAME } from './defended-endpoint.js';

export interface InferenceClient {
  /** Answers for `rows` images of `features` pixels in [0, 1], row-major; one HTTP request. */
  infer(x: Float32Array, rows: number, features: number): Promise<ProbBatch>;
  /** HTTP requests sent so far. */
  readonly requests: number;
}

export class EndpointError extends Error {
  override name = 'EndpointError';
}

/** The request body for a batch of [0, 1] images, as UINT8 pixels. */
export function imageRequest(
  x: Float32Array,
  rows: number,
  features: number,
): { inputs: { name: string; shape: number[]; datatype: string; data: number[] }[] } {
  if (x.length !== rows * features) throw new RangeError(`got ${x.length} values for ${rows}×${features} images`);
  const data = new Array<number>(x.length);
  for (let i = 0; i < x.length; i++) data[i] = Math.max(0, Math.min(255, Math.round(x[i] * 255)));
  return { inputs: [{ name: INPUT_NAME, shape: [rows, features], datatype: 'UINT8', data }] };
}

/** Reads the first output of a KServe V2 answer as a rows×K batch. */
export function readProbabilities(body: unknown, rows: number): ProbBatch {
  const outputs = (body as { outputs?: unknown })?.outputs;
  if (!Array.isArray(outputs) || outputs.length === 0)
    throw new EndpointError(`the endpoint answered without "outputs": ${JSON.stringify(body).slice(0, 200)}`);
  const { shape, data } = outputs[0] as { shape?: unknown; data?: unknown };
  if (!Array.isArray(shape) || shape.length !== 2 || shape[0] !== rows)
    throw new EndpointError(`expected an output of shape [${rows}, K], got ${JSON.stringify(shape)}`);
  const cols = Number(shape[1]);
  const flat = (Array.isArray(data) ? data : []).flat(2) as unknown[];
  if (flat.length !== rows * cols) throw new EndpointError(`the output holds ${flat.length} values, expected ${rows}×${cols}`);
  const out = new Float32Array(flat.length);
  for (let i = 0; i < flat.length; i++) {
    const v = flat[i];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new EndpointError(`the output holds a non-number at ${i}: ${JSON.stringify(v)}`);
    out[i] = v;
  }
  return { rows, cols, data: out };
}

export interface KserveClientOptions {
  /** Extra request headers (e.g. the client's API key). */
  headers?: Record<string, string>;
  /** Called before each request is sent (e.g. to advance a simulated clock). */
  onRequest?: () => void;
  /** Named in error messages (e.g. which simulated client was refused). */
  label?: string;
}

export function kserveClient(url: string, options: KserveClientOptions = {}): InferenceClient {
  const headers = { 'content-type': 'application/json', ...options.headers };
  const who = options.label ? ` to ${options.label}` : '';
  let requests = 0;
  return {
    get requests() {
      return requests;
    },
    async infer(x, rows, features) {
      requests += 1;
      options.onRequest?.();
      const response = await postWithRetry(url, JSON.stringify(imageRequest(x, rows, features)), headers);
      const text = await response.text();
      if (!response.ok) throw new EndpointError(`${url} answered ${response.status}${who}: ${text.slice(0, 300)}`);
      return readProbabilities(JSON.parse(text), rows);
    },
  };
}

/**
 * POSTs `body`, retrying once when the connection was reset before any answer: after a long pause
 * (an attacker training between rounds) the server may close an idle keep-alive socket just as the
 * next request reuses it. No answer was read, so no query is counted twice.
 */
export async function postWithRetry(url: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<Response> {
  try {
    return await fetch(url, { method: 'POST', headers, body });
  } catch (error) {
    const code = (error as { cause?: { code?: string } }).cause?.code;
    if (code !== 'ECONNRESET' && code !== 'UND_ERR_SOCKET') throw error;
    return fetch(url, { method: 'POST', headers, body });
  }
}

/** Copies the images at `indices` of a row-major pool into one contiguous block. */
export function gatherRows(x: Float32Array, features: number, indices: ArrayLike<number>): Float32Array {
  const out = new Float32Array(indices.length * features);
  for (let i = 0; i < indices.length; i++) out.set(x.subarray(indices[i] * features, (indices[i] + 1) * features), i * features);
  return out;
}

/** Sends `rows` images in requests of at most `requestRows`, returning all answers in order. */
export async function inferAll(
  client: InferenceClient,
  x: Float32Array,
  rows: number,
  features: number,
  requestRows: number,
  onProgress?: (done: number) => void,
): Promise<ProbBatch> {
  let out: Float32Array | undefined;
  let cols = 0;
  for (let start = 0; start < rows; start += requestRows) {
    const count = Math.min(requestRows, rows - start);
    const answer = await client.infer(x.subarray(start * features, (start + count) * features), count, features);
    if (!out) {
      cols = answer.cols;
      out = new Float32Array(rows * cols);
    }
    if (answer.cols !== cols) throw new EndpointError(`the endpoint answered ${answer.cols} classes after answering ${cols}`);
    out.set(answer.data, start * cols);
    onProgress?.(start + count);
  }
  return { rows, cols, data: out ?? new Float32Array(0) };
}
