/**
 * Reading bodies with a size limit, decoding gzip/deflate/brotli, the headers a proxy must not forward,
 * the framing it refuses (framingDoubt), and the request body it forwards (serialiseRequest).
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { AnswerFormatError, RequestFormatError } from '../errors.js';

/** RFC 9110 §7.6.1 connection-specific headers, never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** The headers that frame a message body: the proxy never forwards a client's, it frames what it forwards itself. */
const FRAMING = new Set(['content-length', 'transfer-encoding']);

/**
 * Headers a Connection header cannot remove: they frame, route, type or authenticate the message.
 * (A Connection header naming a framing header is refused outright, see framingDoubt.)
 */
const NOT_CONNECTION_OPTIONS = new Set([...FRAMING, 'host', 'authorization', 'content-type', 'content-encoding']);

/** Methods whose requests carry no body (RFC 9110 §9.3): the proxy forwards none for them, and refuses one that comes. */
export const BODYLESS_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']);

/** The header names a Connection header lists, lower-case. */
function connectionOptions(headers: IncomingHttpHeaders): string[] {
  return headers.connection
    ? String(headers.connection)
        .split(',')
        .map((h) => h.trim().toLowerCase())
        .filter(Boolean)
    : [];
}

/** Headers without hop-by-hop ones (and those the Connection header names, unless they matter), minus `drop`. */
export function forwardableHeaders(headers: IncomingHttpHeaders, drop: readonly string[] = []): OutgoingHttpHeaders {
  // Runs twice per request: a plain loop, and the Connection list parsed only when there is one.
  const named = connectionOptions(headers).filter((name) => !NOT_CONNECTION_OPTIONS.has(name));
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || drop.includes(name) || (named.length > 0 && named.includes(name))) continue;
    out[name] = value;
  }
  return out;
}

/**
 * Why a request's framing is in doubt, or undefined when it is not. Refused (400, connection closed)
 * before anything is forwarded: such a request is how a body is smuggled past a proxy as a second
 * request to the model server, whose answer (the undefended probabilities) would reach another request.
 * - a body on a method that has none (GET, HEAD, DELETE, OPTIONS, ...): refused rather than dropped
 *   silently, so a client that meant it learns it, and an attack is visible as a 400 in the metrics;
 * - Content-Length and Transfer-Encoding together (Node's parser refuses that already; checked again
 *   so that a server built with insecureHTTPParser cannot let it through);
 * - a Connection header that names a framing header (content-length, transfer-encoding).
 * "Content-Length: 0" on a bodyless method is no body, and passes.
 */
export function framingDoubt(method: string, headers: IncomingHttpHeaders): string | undefined {
  const length = headers['content-length'];
  const chunked = headers['transfer-encoding'] !== undefined;
  if (chunked && length !== undefined) return 'the request has both Content-Length and Transfer-Encoding';
  const named = connectionOptions(headers).filter((name) => FRAMING.has(name));
  if (named.length > 0) return `the Connection header names ${named.join(', ')}, which frames the body; remove it from Connection`;
  if (BODYLESS_METHODS.has(method) && (chunked || (length !== undefined && length.trim() !== '0')))
    return `a ${method} request carries no body; send it without one`;
  return undefined;
}

export class BodyTooLargeError extends Error {}

/** The sender stopped before its body ended (its connection closed or failed): on a request, the client's doing. */
export class BodyAbortedError extends Error {}

/** Keeps a stream's late 'error' events from crashing the process once nobody waits on it. */
function ignoreLateError(): void {}

/**
 * Reads a whole stream; rejects with BodyTooLargeError past `limit` bytes (and stops reading).
 * Once settled, its listeners are taken off the stream: a stream that outlives the request (a pooled
 * upstream socket's message) would otherwise keep the promise, and all the request holds, reachable.
 */
export function readBody(stream: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(stream.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      stream.resume();
      reject(new BodyTooLargeError(`the body declares ${declared} bytes, over the limit of ${limit}`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const detach = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('aborted', onAborted);
      stream.on('error', ignoreLateError);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        detach();
        stream.resume();
        reject(new BodyTooLargeError(`the body is over the limit of ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      detach();
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    };
    const onError = (error: Error): void => {
      detach();
      // The client's connection failed (a reset) while it sent: its side, on every route that reads a body.
      reject(new BodyAbortedError(`the body could not be read: ${error.message}`));
    };
    const onAborted = (): void => {
      detach();
      reject(new BodyAbortedError('the body was aborted'));
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onError);
    stream.once('aborted', onAborted);
  });
}

const gunzip = promisify(zlib.gunzip);
const inflate = promisify(zlib.inflate);
const brotli = promisify(zlib.brotliDecompress);

/** True when a Content-Encoding header asks for no decoding (absent, empty or identity). */
export function isIdentityEncoding(encoding: string | undefined): boolean {
  return encoding === undefined || encoding === '' || encoding.trim().toLowerCase() === 'identity';
}

/** Decodes a body by its Content-Encoding, never past `limit` bytes; null for an encoding it does not know. */
export async function decodeBody(body: Buffer, encoding: string | undefined, limit: number): Promise<Buffer | null> {
  const steps = String(encoding ?? '')
    .split(',')
    .map((e) => e.trim().toLowerCase())
    .filter((e) => e && e !== 'identity')
    .reverse();
  let out = body;
  for (const step of steps) {
    const options = { maxOutputLength: limit };
    if (step === 'gzip' || step === 'x-gzip') out = await gunzip(out, options);
    else if (step === 'deflate') out = await inflate(out, options);
    else if (step === 'br') out = await brotli(out, options);
    else return null;
  }
  return out;
}

/** Parses the JSON of a client's request body (400 when it is not JSON). */
export function parseRequestJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new RequestFormatError(`the request body is not valid JSON (${(error as Error).message})`);
  }
}

/** Whether a parsed JSON value holds a number JSON.parse read as ±Infinity (a literal beyond ±1.8e308). */
function holdsNonFinite(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return true;
    } else if (Array.isArray(v)) {
      for (const item of v) stack.push(item);
    } else if (v !== null && typeof v === 'object') {
      for (const key in v) stack.push((v as Record<string, unknown>)[key]);
    }
  }
  return false;
}

/**
 * The body forwarded to the model for a parsed request: the value the proxy read (and its detectors
 * and surrogate saw), serialised again, never the client's bytes. The model cannot then read another
 * input than the proxy did (a duplicate key, which JSON.parse resolves to the last one and a model
 * server may resolve to the first; bytes that are not UTF-8, which the proxy read as U+FFFD).
 * Numbers go as the doubles the proxy read, in the shortest form: the same value, except an integer
 * beyond 2^53 (an INT64 input), which reaches the model rounded to a double as the proxy read it.
 * Refused (400): a number beyond a double's range (read as Infinity, it could only be sent as null)
 * and nesting too deep to serialise. Costs about what JSON.parse did (a 19 MB tensor: ~0.1 s).
 */
export function serialiseRequest(value: unknown): Buffer {
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    if (error instanceof RangeError) throw new RequestFormatError('the request body is nested too deeply');
    throw error;
  }
  // JSON.stringify writes a non-finite number as null: only a body with a null can hold one.
  if (text.includes('null') && holdsNonFinite(value)) throw new RequestFormatError('the request holds a number out of range (beyond ±1.8e308)');
  return Buffer.from(text, 'utf8');
}

/** Parses the JSON of a model answer (502 when it is not JSON). */
export function parseAnswerJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new AnswerFormatError('model answer: not valid JSON');
  }
}
