/**
 * A request path as a lenient model server might read it, so that the proxy never passes through a
 * spelling of a route it defends or refuses (/v2/models/m%2Finfer, //v2/models/m/infer/,
 * /v2/models/x/../m/infer, http://host/v2/models/m/infer). Case is kept: match it case-insensitively.
 */

function decode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/** The path percent-decoded, with dot segments resolved and no empty segments; undefined: a malformed escape. */
export function normalisePath(pathname: string): string | undefined {
  let path = pathname.split('#')[0];
  // An absolute-form target: the server reads its path.
  if (!path.startsWith('/') && URL.canParse(path)) path = new URL(path).pathname;
  let decoded = decode(path);
  if (decoded === undefined) return undefined;
  // Again while that changes it, for a server that decodes twice (%252F).
  for (let again = decode(decoded); again !== undefined && again !== decoded; again = decode(decoded)) decoded = again;
  const segments: string[] = [];
  for (const raw of decoded.replaceAll('\\', '/').split('/')) {
    const segment = raw.split(';')[0]; // path parameters (/infer;x), dropped by some servers
    if (segment === '..') segments.pop();
    else if (segment !== '' && segment !== '.') segments.push(segment);
  }
  return `/${segments.join('/')}`;
}
