/**
 * Which requests the proxy defends, which it passes through untouched, and which it refuses.
 * Only known routes are passed: an unlisted route on the model server might answer probabilities
 * by another path (a V1 predict next to V2, TF Serving's :classify), so it is refused unless allowed.
 * Nor is a path passed that a model server may read as a defended or refused route (path-normalise.ts).
 */
import { ServingOptionError } from '../errors.js';
import type { ProtocolName } from '../protocols/index.js';
import { readPassedPath } from './path-normalise.js';

export type RouteDecision = { kind: 'infer' } | { kind: 'pass' } | { kind: 'refuse'; status: number; message: string };

interface RoutePattern {
  methods: ReadonlySet<string> | null;
  regex: RegExp;
  source: string;
}

const NAME = '[^/:]+';
const READ_METHODS = new Set(['GET', 'HEAD']);
const POST = new Set(['POST']);

/**
 * "POST /predict", "/models/:name/predict", "GET /health", "* /anything/*": an optional method
 * (or * for any), then a path where ":name" matches one segment and "*" matches the rest.
 */
export function parseRoutePattern(text: string, defaultMethods: ReadonlySet<string>): RoutePattern {
  const trimmed = String(text).trim();
  const match = /^(?:([A-Za-z]+|\*)\s+)?(\/\S*)$/.exec(trimmed);
  if (!match) throw new ServingOptionError(`cannot read route "${text}"; write it like "POST /predict" or "/models/:name/predict"`);
  const methods = match[1] === '*' ? null : match[1] ? new Set([match[1].toUpperCase()]) : defaultMethods;
  const body = match[2]
    .split('/')
    .map((segment) => (segment === '*' ? '.*' : segment.startsWith(':') ? NAME : segment.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return { methods, regex: new RegExp(`^${body}$`), source: trimmed };
}

function matches(patterns: readonly RoutePattern[], method: string, path: string): boolean {
  return patterns.some((p) => (p.methods === null || p.methods.has(method)) && p.regex.test(path));
}

const BUILT_IN: Record<ProtocolName, { infer: RoutePattern[]; pass: RoutePattern[]; refuse: { pattern: RoutePattern; status: number; message: string }[] }> = {
  'kserve-v2': {
    infer: [{ methods: POST, regex: new RegExp(`^/v2/models/${NAME}(/versions/${NAME})?/infer$`), source: 'POST /v2/models/{name}[/versions/{v}]/infer' }],
    pass: [
      { methods: READ_METHODS, regex: /^\/v2\/?$/, source: 'GET /v2' },
      { methods: READ_METHODS, regex: /^\/v2\/health\/(live|ready)$/, source: 'GET /v2/health/{live,ready}' },
      { methods: READ_METHODS, regex: new RegExp(`^/v2/models/${NAME}(/versions/${NAME})?(/ready)?$`), source: 'GET /v2/models/{name}[/versions/{v}][/ready]' },
    ],
    refuse: [],
  },
  'tf-serving': {
    infer: [
      {
        methods: POST,
        regex: new RegExp(`^/v1/models/${NAME}(/versions/${NAME}|/labels/${NAME})?:predict$`),
        source: 'POST /v1/models/{name}[/versions/{v}]:predict',
      },
    ],
    pass: [
      {
        methods: READ_METHODS,
        regex: new RegExp(`^/v1/models/${NAME}(/versions/${NAME}|/labels/${NAME})?(/metadata)?$`),
        source: 'GET /v1/models/{name}[/versions/{v}][/metadata]',
      },
    ],
    refuse: [
      {
        pattern: {
          methods: null,
          regex: new RegExp(`^/v1/models/${NAME}(/versions/${NAME}|/labels/${NAME})?:(classify|regress)$`),
          source: ':classify / :regress',
        },
        status: 501,
        message: ':classify and :regress answer scores this proxy does not defend; use :predict',
      },
    ],
  },
  'json-path': { infer: [], pass: [], refuse: [] },
};

export interface RouteOptions {
  /** Extra (json-path: the only) inference routes, e.g. "POST /predict". */
  inferRoutes?: readonly string[];
  /** Extra routes to pass through untouched, e.g. "GET /health". */
  passRoutes?: readonly string[];
  /** Pass every other route through untouched (off by default: see the module comment). */
  passUnknownRoutes?: boolean;
}

const ambiguous = (method: string, path: string, read: string, what: string): string =>
  `${method} ${path} is ambiguous: a model server may read it as ${read}, ${what}; it is not passed through. ` +
  'Send the route as written (lower-case ASCII, no percent-escapes, single slashes, no trailing slash)';

export function createRouteTable(protocol: ProtocolName | string, options: RouteOptions): (method: string, path: string) => RouteDecision {
  const builtIn = BUILT_IN[protocol as ProtocolName] ?? BUILT_IN['json-path'];
  const infer = [...builtIn.infer, ...(options.inferRoutes ?? []).map((r) => parseRoutePattern(r, POST))];
  const pass = [...builtIn.pass, ...(options.passRoutes ?? []).map((r) => parseRoutePattern(r, READ_METHODS))];
  if (infer.length === 0) throw new ServingOptionError(`the ${protocol} protocol has no built-in inference route; pass inferRoutes, e.g. ["POST /predict"]`);
  const passUnknown = options.passUnknownRoutes === true;
  // Defended and refused routes, whatever the case, for a passed path as a model server may read it.
  const guarded = [
    ...infer.map((p) => ({ regex: new RegExp(p.regex.source, 'i'), what: `the inference route ${p.source}` })),
    ...builtIn.refuse.map((r) => ({ regex: new RegExp(r.pattern.regex.source, 'i'), what: `a route this proxy refuses (${r.message})` })),
  ];
  const passUnlessGuarded = (method: string, path: string): RouteDecision => {
    const reading = readPassedPath(path);
    const refuse = (message: string): RouteDecision => ({ kind: 'refuse', status: 400, message });
    if (reading.kind === 'malformed') return refuse(`${method} ${path}: malformed percent-escape in the path`);
    if (reading.kind === 'hidden-character')
      return refuse(
        `${method} ${path}: a control or invisible character in the path (a model server may cut the path there, or drop it); it is not passed through`,
      );
    if (reading.kind === 'dot-segments')
      return refuse(
        `${method} ${path} is ambiguous: it holds dot segments (. or ..), which model servers resolve in different ways; it is not passed through. Send the path with them resolved`,
      );
    // Any method but a CORS preflight (no inputs): a server may route on the path alone.
    if (method === 'OPTIONS') return { kind: 'pass' };
    for (const { regex, what } of guarded) {
      const read = reading.paths.find((p) => regex.test(p));
      if (read !== undefined) return refuse(ambiguous(method, path, read, what));
    }
    return { kind: 'pass' };
  };
  return (method, path) => {
    if (matches(infer, method, path)) return { kind: 'infer' };
    for (const { pattern, status, message } of builtIn.refuse) if (matches([pattern], method, path)) return { kind: 'refuse', status, message };
    if (matches(pass, method, path) || passUnknown) return passUnlessGuarded(method, path);
    return {
      kind: 'refuse',
      status: 404,
      message: `${method} ${path} is not a route this proxy serves (inference: ${infer.map((p) => p.source).join(', ')}; passed through: ${pass.map((p) => p.source).join(', ') || 'none'})`,
    };
  };
}
