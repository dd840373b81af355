/**
 * Who a request comes from: an API-key header, a JWT claim, the remote address (X-Forwarded-For
 * read only from trusted proxies), or the caller's own function. Raw ids never leave this file:
 * the rest of the serving layer (store keys, logs, the admin route) sees a keyed hash.
 *
 * JWT: the payload segment is decoded, NOT verified. The caller's own auth (before this layer) must
 * verify the token; otherwise a client picks any identity it likes, including a fresh one per query.
 */
import * as crypto from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { optionStyle, parseOptions, SENTENCE } from '../../validation/index.js';
import { RequestFormatError, ServingOptionError } from '../errors.js';

/** "header:x-api-key", "jwt:sub", "ip", or a function returning the raw id (undefined/null/"" = anonymous). */
export type IdentityOption = string | ((req: IncomingMessage) => string | null | undefined);

export interface ClientIdentity {
  /** Hashed id, safe for logs, store keys and the admin route; "anonymous" for requests without one. */
  readonly id: string;
  readonly anonymous: boolean;
}

export interface IdentityConfig {
  identity: IdentityOption;
  /** Peers (CIDRs or addresses) whose X-Forwarded-For is believed; only with identity "ip". */
  trustProxy?: readonly string[];
  /** HMAC key for the id hash; without it, SHA-256 (still not reversible for API keys, guessable for IPs). */
  idSecret?: string;
}

export const ANONYMOUS_ID = 'anonymous';

/** The 8 groups of an IPv6 address (undefined when it is not one). An embedded IPv4 tail is read as two groups. */
export function ipv6Groups(address: string): number[] | undefined {
  if (isIP(address) !== 6) return undefined;
  let text = address.split('%')[0].toLowerCase();
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const parse = (part: string | undefined) => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const left = parse(head);
  const right = parse(tail);
  const groups = tail === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

/**
 * One text per address, whichever form the socket or a proxy wrote it in. A port and brackets are
 * dropped ("203.0.113.7:50123", "[2001:db8::1]:443": some proxies write the client's source port, which
 * changes per connection). An IPv4-mapped IPv6 address in any spelling ("::ffff:10.0.0.1" from a
 * dual-stack socket, "0:0:0:0:0:ffff:a00:1") is its IPv4 address. Anything else comes back trimmed.
 */
export function normalizeAddress(address: string): string {
  let text = address.trim();
  if (isIP(text) === 4) return text;
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(text);
  const v4WithPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(text);
  if (bracketed && isIP(bracketed[1]) === 6) text = bracketed[1];
  else if (v4WithPort && isIP(v4WithPort[1]) === 4) return v4WithPort[1];
  if (!/ffff/i.test(text)) return text;
  // The usual spelling, from every dual-stack socket: no need to parse the groups.
  const usual = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(text);
  if (usual && isIP(usual[1]) === 4) return usual[1];
  const groups = ipv6Groups(text);
  if (groups && groups[5] === 0xffff && groups.slice(0, 5).every((group) => group === 0))
    return `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.${groups[7] & 0xff}`;
  return text;
}

/** An address or a CIDR, split into what BlockList takes; undefined when it is neither. */
function proxyEntry(entry: string): { address: string; type: 'ipv4' | 'ipv6'; prefix?: number } | undefined {
  const [address, prefixText, ...rest] = entry.trim().split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return undefined;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (prefixText === undefined) return { address, type };
  const prefix = /^\d+$/.test(prefixText) ? Number(prefixText) : NaN;
  return prefix <= (family === 4 ? 32 : 128) ? { address, type, prefix } : undefined;
}

const trustProxySchema = z.array(
  z.custom<string>((entry) => typeof entry === 'string' && proxyEntry(entry) !== undefined, {
    error: 'an address or CIDR, e.g. "10.0.0.0/8" or "127.0.0.1" (a prefix length up to 32 for IPv4, 128 for IPv6)',
  }),
  { error: 'a list of CIDRs or addresses, e.g. ["10.0.0.0/8"]' },
);

const IDENTITY_SPEC = /^(ip|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+|jwt:[^\s]+)$/;

const identityConfigSchema = z
  .strictObject(
    {
      identity: z.custom<IdentityOption>((identity) => typeof identity === 'function' || (typeof identity === 'string' && IDENTITY_SPEC.test(identity)), {
        error: '"header:NAME" (e.g. "header:x-api-key"), "jwt:CLAIM" (e.g. "jwt:sub"), "ip", or a function (req) => id',
      }),
      trustProxy: trustProxySchema.optional(),
      idSecret: z.string({ error: 'a string (the key hashing client ids)' }).optional(),
    } satisfies Record<keyof IdentityConfig, z.ZodType>,
    { error: 'an object, e.g. { identity: "header:x-api-key" }' },
  )
  .superRefine((config, context) => {
    if (config.trustProxy && config.trustProxy.length > 0 && config.identity !== 'ip')
      context.addIssue({ code: 'custom', path: ['trustProxy'], message: 'applies to identity "ip" only; remove it or use identity: "ip"', params: SENTENCE });
  });

const identityStyle = optionStyle(ServingOptionError, 'clients');

/** The peers whose X-Forwarded-For is believed; a bad entry throws ServingOptionError naming it. */
export function parseTrustedProxies(entries: readonly string[]): BlockList {
  parseOptions(trustProxySchema, entries, optionStyle(ServingOptionError, 'clients.trustProxy'));
  const list = new BlockList();
  for (const entry of entries) {
    const { address, type, prefix } = proxyEntry(entry)!;
    if (prefix === undefined) list.addAddress(address, type);
    else list.addSubnet(address, prefix, type);
  }
  return list;
}

function isTrusted(list: BlockList, address: string): boolean {
  const family = isIP(address);
  return family !== 0 && list.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * The client's address: the peer, unless the peer is a trusted proxy; then the right-most
 * X-Forwarded-For hop that is not a trusted proxy (hops left of it are the client's own claims).
 */
export function clientAddress(req: IncomingMessage, trusted: BlockList | undefined): string | undefined {
  const peer = req.socket?.remoteAddress ? normalizeAddress(req.socket.remoteAddress) : undefined;
  if (!peer || !trusted || !isTrusted(trusted, peer)) return peer;
  const header = req.headers['x-forwarded-for'];
  const hops = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',').map(normalizeAddress).filter(Boolean);
  let client = peer;
  for (let i = hops.length - 1; i >= 0; i--) {
    client = hops[i];
    if (!isTrusted(trusted, client)) return client;
  }
  return client;
}

/**
 * A request header that names the client (its identity or its cohort), or undefined without it. Sent
 * more than once, it is refused (400): Node would join the copies ("KEY, rnd-1", a new identity per
 * request), while the auth in front may have checked only one of them.
 */
export function singleHeader(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  if (value === undefined) return undefined;
  let copies = Array.isArray(value) ? value.length : 1;
  // Node keeps only the first of some repeated headers (authorization) and joins others: the raw lines tell.
  const lines = req.rawHeaders as readonly string[] | undefined;
  if (Array.isArray(lines)) {
    copies = 0;
    for (let i = 0; i < lines.length; i += 2) if (lines[i].length === name.length && lines[i].toLowerCase() === name) copies++;
  }
  if (copies > 1) throw new RequestFormatError(`request: the ${name} header appears ${copies} times; send it once (the server tells clients apart by it)`);
  return Array.isArray(value) ? value[0] : value;
}

/** The claims of a JWT (decoded, not verified: see the module comment), or undefined. A repeated Authorization header is refused (400). */
export function jwtClaims(req: IncomingMessage): Record<string, unknown> | undefined {
  const auth = singleHeader(req, 'authorization');
  if (typeof auth !== 'string') return undefined;
  const match = /^Bearer\s+([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)$/i.exec(auth.trim());
  if (!match) return undefined;
  try {
    const claims: unknown = JSON.parse(Buffer.from(match[2], 'base64url').toString('utf8'));
    return typeof claims === 'object' && claims !== null && !Array.isArray(claims) ? (claims as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Builds the extractor once; a bad spec throws with what to write instead. The extractor throws
 * RequestFormatError (400) for a request whose identity header (Authorization for "jwt:") appears more than once.
 */
export function createIdentifier(config: IdentityConfig): (req: IncomingMessage) => ClientIdentity {
  const identify = createRawIdentifier(config);
  return (req) => identify(req).identity;
}

/**
 * The extractor with the raw id beside the hashed one, for the serving layer's cohort key ("prefix:N"
 * reads the raw API key). The raw id is for that only: never stored, logged or listed.
 */
export function createRawIdentifier(config: IdentityConfig): (req: IncomingMessage) => { identity: ClientIdentity; raw: string | undefined } {
  parseOptions(identityConfigSchema, config, identityStyle);
  const { identity } = config;
  const trusted = config.trustProxy && config.trustProxy.length > 0 ? parseTrustedProxies(config.trustProxy) : undefined;
  let kind: 'fn' | 'ip' | 'header' | 'jwt';
  let read: (req: IncomingMessage) => string | null | undefined;
  if (typeof identity === 'function') {
    kind = 'fn';
    read = identity;
  } else if (identity === 'ip') {
    kind = 'ip';
    read = (req) => clientAddress(req, trusted);
  } else if (identity.startsWith('header:')) {
    kind = 'header';
    const name = identity.slice(7).toLowerCase();
    read = (req) => singleHeader(req, name);
  } else {
    kind = 'jwt';
    const claim = identity.slice(4);
    read = (req) => {
      const value = jwtClaims(req)?.[claim];
      return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value)) ? String(value) : undefined;
    };
  }
  const hash = idHasher(config.idSecret);
  const keyed = (raw: string): string => hash(`${kind}:${raw}`);
  return (req) => {
    const raw = read(req);
    if (raw === undefined || raw === null || raw === '') return { identity: { id: ANONYMOUS_ID, anonymous: true }, raw: undefined };
    return { identity: { id: keyed(String(raw)), anonymous: false }, raw: String(raw) };
  };
}

/**
 * The id's digest: the first 32 hex digits of SHA-256 (HMAC-SHA-256 with a secret). Stores shared
 * across replicas and versions key clients by it, so it never changes. Runs on every request: the
 * secret is imported once, and without one Node's one-shot hash (20.12+) skips a Hash object.
 */
function idHasher(secret: string | undefined): (text: string) => string {
  if (secret) {
    const key = crypto.createSecretKey(Buffer.from(secret));
    return (text) => crypto.createHmac('sha256', key).update(text).digest('hex').slice(0, 32);
  }
  const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;
  if (oneShot) return (text) => oneShot('sha256', text, 'hex').slice(0, 32);
  return (text) => crypto.createHash('sha256').update(text).digest('hex').slice(0, 32);
}
