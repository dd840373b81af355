/** Reading bodies with a size limit, decoding gzip/deflate/brotli, and the headers a proxy must not forward. */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { AnswerFormatError, RequestFormatError } from '../errors.js';

/** RFC 9110 §7.6.1 connection-specific headers, never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** Headers without hop-by-hop ones (and those the Connection header names), minus `drop`. */
export function forwardableHeaders(headers: IncomingHttpHeaders, drop: readonly string[] = []): OutgoingHttpHeaders {
  // Runs twice per request: a plain loop, and the Connection list parsed only when there is one.
  const named = headers.connection
    ? String(headers.connection)
        .split(',')
        .map((h) => h.trim().toLowerCase())
        .filter(Boolean)
    : [];
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || drop.includes(name) || (named.length > 0 && named.includes(name))) continue;
    out[name] = value;
  }
  return out;
}

export class BodyTooLargeError extends Error {}

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
      reject(error);
    };
    const onAborted = (): void => {
      detach();
      reject(new Error('the body was aborted'));
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

/** Parses the JSON of a model answer (502 when it is not JSON). */
export function parseAnswerJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new AnswerFormatError('model answer: not valid JSON');
  }
}
