/** Base64 text of an encoded image → bytes, refusing what is not base64 (Node's decoder silently skips bad characters). */
import { RequestFormatError } from '../errors.js';

const DATA_URL = /^data:[\w.+-]+\/[\w.+-]+;base64,/i;
const STANDARD = /^[A-Za-z0-9+/]*={0,2}$/;
const URL_SAFE = /^[A-Za-z0-9_-]*={0,2}$/;

/** Decoded size of base64 text of `length` characters (padding aside), without decoding it. */
function decodedLength(text: string): number {
  let padding = 0;
  if (text.endsWith('==')) padding = 2;
  else if (text.endsWith('=')) padding = 1;
  return Math.floor(((text.length - padding) * 3) / 4);
}

/**
 * The bytes of one image; `name` says which image in error messages. Over `maxBytes` → 413 before
 * anything is decoded; not base64 → 400.
 */
export function decodeBase64Image(text: string, name: string, maxBytes: number): Buffer {
  const body = text.replace(DATA_URL, '');
  const size = decodedLength(body);
  if (size > maxBytes) throw new RequestFormatError(`request: ${name} is ${size} bytes, over the limit of ${maxBytes} bytes per image`, 413);
  if (body.length === 0) throw new RequestFormatError(`request: ${name} is empty; send a base64 JPEG, PNG or WebP`);
  // Unpadded base64 is accepted; a length of 4n+1 cannot be base64 at all.
  if (!(STANDARD.test(body) || URL_SAFE.test(body)) || body.length % 4 === 1 || (body.includes('=') && body.length % 4 !== 0)) {
    throw new RequestFormatError(`request: ${name} is not valid base64 (only A–Z, a–z, 0–9, "+/" or "-_", and "=" padding at the end, no whitespace)`);
  }
  return Buffer.from(body, 'base64');
}
