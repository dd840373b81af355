/**
 * A request path as a lenient model server might read it, so that the proxy never passes through a
 * spelling of a route it defends or refuses (/v2/models/m%2Finfer, //v2/models/m/infer/,
 * /v2/models/x/../m/infer, http://host/v2/models/m/infer, /v2/models/m/%EF%BD%89nfer). Case is kept:
 * match it case-insensitively.
 */

function decode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/** Decoding passes a path may need; more (%2525…25) is refused: each pass costs the whole path. */
const MAX_DECODES = 8;

/**
 * Every run of escapes decoded, a stray % (50%off, %zz) left as it is: how a lenient server decodes
 * a second time. Undefined when a run of escapes is not UTF-8 (%C0%AE, a cut sequence): a server may
 * read it as anything, so it is refused. Without this, one stray % stopped the second decoding and
 * hid an encoded route behind it (/v2/models/m%252Finfer%25zz).
 */
function decodeLeniently(text: string): string | undefined {
  let invalid = false;
  const decoded = text.replace(/(?:%[0-9a-f]{2})+/gi, (run) => {
    const read = decode(run);
    if (read === undefined) invalid = true;
    return read ?? run;
  });
  return invalid ? undefined : decoded;
}

/** Decoded again while that changes it, for a server that decodes twice (%252F); undefined past MAX_DECODES or on an escape that is not UTF-8. */
function decodeAgain(decoded: string): string | undefined {
  for (let pass = 0; pass < MAX_DECODES; pass++) {
    const again = decodeLeniently(decoded);
    if (again === undefined) return undefined;
    if (again === decoded) return decoded;
    decoded = again;
  }
  return undefined;
}

/** The path percent-decoded, as often as that changes it; undefined: a malformed escape, or too many encodings. */
function decodePath(pathname: string): string | undefined {
  let path = pathname.split('#')[0];
  // An absolute-form target: the server reads its path.
  if (!path.startsWith('/') && URL.canParse(path)) path = new URL(path).pathname;
  const decoded = decode(path);
  return decoded === undefined ? undefined : decodeAgain(decoded);
}

/** The segments a server routes on: backslashes read as slashes, path parameters (/infer;x) dropped, no empty ones. */
function segmentsOf(decoded: string): string[] {
  return decoded
    .replaceAll('\\', '/')
    .split('/')
    .map((raw) => raw.split(';')[0])
    .filter((segment) => segment !== '');
}

const isDotSegment = (segment: string): boolean => segment === '.' || segment === '..';

function resolveDots(segments: readonly string[]): string {
  const resolved: string[] = [];
  for (const segment of segments) {
    if (segment === '..') resolved.pop();
    else if (segment !== '.') resolved.push(segment);
  }
  return `/${resolved.join('/')}`;
}

/** The path percent-decoded, with dot segments resolved and no empty segments; undefined: a malformed escape. */
export function normalisePath(pathname: string): string | undefined {
  const decoded = decodePath(pathname);
  return decoded === undefined ? undefined : resolveDots(segmentsOf(decoded));
}

/**
 * Control characters (a server may cut the path at a NUL: /infer%00.txt) and invisible ones (zero
 * width, bidirectional overrides, byte order marks, line separators), which a server may drop.
 */
const HIDDEN_CHARACTER = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;
const MARK = /^\p{M}$/u;

/**
 * One character as ASCII where some server's folding makes it so: case mapping (ı upper-cases to I,
 * İ lower-cases to i plus a dot), accents dropped; a lone combining mark dropped.
 */
function foldCharacter(character: string): string {
  if (character < '\x80') return character;
  if (MARK.test(character)) return '';
  for (const form of [character, character.toUpperCase(), character.toLowerCase()]) {
    const bare = form.normalize('NFD').replace(/\p{M}/gu, '');
    if (PRINTABLE_ASCII.test(bare)) return bare;
  }
  return character;
}

/** The decoded path as a server that folds Unicode (NFKC: ｉ, K, ：, ／) and case may read it, lower-cased. */
function foldPath(decoded: string): string | undefined {
  const folded = Array.from(decoded.normalize('NFKC'), foldCharacter).join('').toLowerCase();
  // Folding may spell an escape (％２Ｆ): decoded again, as the path itself is.
  return decodeAgain(folded);
}

/** A segment as a server that trims it may read it: no surrounding whitespace, no trailing dots (Windows). */
const trimmed = (segment: string): string => {
  const bare = segment.trim();
  if (isDotSegment(bare)) return bare;
  // A loop, not /\.+$/: that regex backtracks quadratically on a long run of dots followed by another character.
  let end = bare.length;
  while (end > 0 && bare.charCodeAt(end - 1) === 0x2e) end--;
  return end > 0 ? bare.slice(0, end) : bare;
};

/** `read`: every way a lenient server may read the path (each to be checked against the guarded routes); else why it is refused. */
export type PathReading = { kind: 'read'; paths: string[] } | { kind: 'malformed' } | { kind: 'hidden-character' } | { kind: 'dot-segments' };

/**
 * A path to be passed through, as lenient servers may read it. Refused outright (not one reading but
 * several, depending on the server): a malformed escape, a control or invisible character, encoded
 * or raw, and dot segments (. and .., however spelled: a server may resolve them before or after
 * decoding %2F, or not at all).
 */
export function readPassedPath(pathname: string): PathReading {
  const decoded = decodePath(pathname);
  if (decoded === undefined) return { kind: 'malformed' };
  const folded = foldPath(decoded);
  if (folded === undefined) return { kind: 'malformed' };
  if (HIDDEN_CHARACTER.test(decoded) || HIDDEN_CHARACTER.test(folded)) return { kind: 'hidden-character' };
  const paths = new Set<string>();
  for (const [text, fold] of [
    [decoded, false],
    [folded, true],
  ] as const) {
    // Whole, and cut at a decoded ? or # (a server that decodes before it splits off the query).
    for (const candidate of new Set([text, text.split(/[?#]/)[0]])) {
      const segments = segmentsOf(candidate);
      const read = fold ? segments.map(trimmed).filter((segment) => segment !== '') : segments;
      if (read.some(isDotSegment)) return { kind: 'dot-segments' };
      paths.add(`/${read.join('/')}`);
    }
  }
  return { kind: 'read', paths: [...paths] };
}
