/**
 * A client's cohort: a second key beside its identity, shared by identities that likely belong
 * together, so that detectors can run over the cohort's traffic as over one client's. A thief who
 * splits its queries over many API keys usually cannot split its network, its tenant or its key
 * prefix as easily.
 *
 *   "ip"              the client address's /24 (IPv4) or /64 (IPv6) prefix; forwarding headers are
 *                     believed only from trustProxy peers, as for identity "ip"
 *   "ip/V4/V6"        other prefix lengths, e.g. "ip/16/48"
 *   "jwt:CLAIM"       a claim of the bearer token (decoded, not verified), e.g. "jwt:org" or "jwt:tid"
 *   "header:NAME"     a header, e.g. "header:x-tenant-id": one your gateway sets, since the client
 *                     chooses it otherwise
 *   "prefix:N"        the first N characters of the raw identity (API keys issued as "<org>_<secret>")
 *   (req, rawId) => … whatever the function returns (mount mode)
 *
 * Like ids, cohort keys are hashed (HMAC with idSecret) before they reach a store, a log or the admin
 * route. No cohort (undefined, null, "") means the client is judged alone. A cohort header (or the
 * Authorization header for "jwt:") sent more than once is refused (400), as for identities.
 */
import { createHash, createHmac } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { z } from 'zod';
import { optionStyle, parseOptions, SENTENCE } from '../../../validation/index.js';
import { ServingOptionError } from '../../errors.js';
import { clientAddress, ipv6Groups, jwtClaims, normalizeAddress, parseTrustedProxies, singleHeader } from '../identity.js';

export type CohortOption = string | ((req: IncomingMessage, rawId: string | undefined) => string | null | undefined);

export interface CohortConfig {
  cohort: CohortOption;
  trustProxy?: readonly string[];
  idSecret?: string;
}

/** Cohort ids live in the client store beside the clients, under this prefix. */
export const COHORT_PREFIX = '~cohort:';

export const DEFAULT_IPV4_PREFIX = 24;
export const DEFAULT_IPV6_PREFIX = 64;

/** Cohort keys up to this length have their hash cached. */
const MAX_CACHED_KEY = 256;

// Part of this module's interface since before it moved to identity.ts.
export { ipv6Groups };

/**
 * The address's network prefix as text ("203.0.113.0/24", "2001:db8:1:2::/64"); undefined when not an
 * address. A port or brackets are ignored, and an IPv4-mapped address in any spelling is IPv4.
 */
export function addressPrefix(address: string, v4Bits = DEFAULT_IPV4_PREFIX, v6Bits = DEFAULT_IPV6_PREFIX): string | undefined {
  const text = normalizeAddress(address);
  const family = isIP(text);
  if (family === 4) {
    const value = text.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
    // Bitwise operators are 32-bit signed: mask with arithmetic on non-negative numbers.
    const network = value - (value % 2 ** (32 - v4Bits));
    const bytes = [network / 2 ** 24, (network / 2 ** 16) % 256, (network / 2 ** 8) % 256, network % 256].map((b) => Math.floor(b));
    return `${bytes.join('.')}/${v4Bits}`;
  }
  if (family === 6) {
    const groups = ipv6Groups(text)!;
    const out = groups.map((g, i) => {
      const bitsBefore = i * 16;
      if (v6Bits >= bitsBefore + 16) return g;
      if (v6Bits <= bitsBefore) return 0;
      const keep = v6Bits - bitsBefore;
      return g & (0xffff << (16 - keep)) & 0xffff;
    });
    return `${out.map((g) => g.toString(16)).join(':')}/${v6Bits}`;
  }
  return undefined;
}

/** Reads "ip", "ip/24", "ip/24/64" (the prefix lengths, unchecked: the schema bounds them). */
function ipSpec(spec: string): { v4: number; v6: number } | undefined {
  const match = /^ip(?:\/(\d{1,2}))?(?:\/(\d{1,3}))?$/.exec(spec);
  if (!match) return undefined;
  return { v4: match[1] === undefined ? DEFAULT_IPV4_PREFIX : Number(match[1]), v6: match[2] === undefined ? DEFAULT_IPV6_PREFIX : Number(match[2]) };
}

const HEADER_SPEC = /^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const JWT_SPEC = /^jwt:[^\s]+$/;
const PREFIX_SPEC = /^prefix:\d+$/;

const SPECS =
  '"ip" (the /24 or /64 of the client address; "ip/V4/V6" for other prefixes), "jwt:CLAIM" (e.g. "jwt:org"), "header:NAME" (e.g. "header:x-tenant-id"), "prefix:N" (the first N characters of the raw identity), or a function (req, rawId) => key';

const isCohortSpec = (cohort: unknown): boolean =>
  typeof cohort === 'function' ||
  (typeof cohort === 'string' && (ipSpec(cohort) !== undefined || HEADER_SPEC.test(cohort) || JWT_SPEC.test(cohort) || PREFIX_SPEC.test(cohort)));

/** The cohort's form, then the numbers inside a spec string (prefix lengths, N), each refused with what to write. */
const cohortSchema = z.custom<CohortOption>(isCohortSpec, { error: SPECS, abort: true }).superRefine((cohort, context) => {
  if (typeof cohort !== 'string') return;
  const bits = ipSpec(cohort);
  if (bits && (bits.v4 < 1 || bits.v4 > 32 || bits.v6 < 1 || bits.v6 > 128))
    context.addIssue({
      code: 'custom',
      message: `"${cohort}": prefix lengths must be 1–32 (IPv4) and 1–128 (IPv6), e.g. "ip/24/64"`,
      params: SENTENCE,
    });
  const n = PREFIX_SPEC.test(cohort) ? Number(cohort.slice(7)) : 1;
  if (n < 1 || n > 256) context.addIssue({ code: 'custom', message: `"${cohort}": N must be from 1 to 256, e.g. "prefix:8"`, params: SENTENCE });
});

const cohortConfigSchema = z.strictObject(
  {
    cohort: cohortSchema,
    // The entries are read by parseTrustedProxies (identity.ts), which names a bad one.
    trustProxy: z.array(z.unknown(), { error: 'a list of CIDRs or addresses, e.g. ["10.0.0.0/8"]' }).optional(),
    idSecret: z.string({ error: 'a string (the key hashing client ids)' }).optional(),
  } satisfies Record<keyof CohortConfig, z.ZodType>,
  { error: 'an object, e.g. { cohort: "ip" }' },
);

const cohortStyle = optionStyle(ServingOptionError, 'clients');

/** Builds the cohort reader once; a bad spec throws with what to write instead. Returns the hashed cohort id, or undefined. */
export function createCohortReader(config: CohortConfig): (req: IncomingMessage, rawId: string | undefined) => string | undefined {
  parseOptions(cohortConfigSchema, config, cohortStyle);
  const { cohort } = config;
  let kind: string;
  let read: (req: IncomingMessage, rawId: string | undefined) => string | null | undefined;
  const bits = typeof cohort === 'string' ? ipSpec(cohort) : undefined;
  if (typeof cohort === 'function') {
    kind = 'fn';
    read = (req, rawId) => {
      try {
        return cohort(req, rawId);
      } catch {
        // The caller's function failed: the client is judged alone.
        return undefined;
      }
    };
  } else if (bits) {
    const trusted = config.trustProxy && config.trustProxy.length > 0 ? parseTrustedProxies(config.trustProxy) : undefined;
    kind = `ip${bits.v4}/${bits.v6}`;
    // An address's prefix is the same every time: the last ones are kept (parsing is most of the cost).
    const prefixes = new Map<string, string | undefined>();
    read = (req) => {
      const address = clientAddress(req, trusted);
      if (!address) return undefined;
      if (prefixes.has(address)) return prefixes.get(address);
      const prefix = addressPrefix(address, bits.v4, bits.v6);
      if (prefixes.size >= 10_000) prefixes.delete(prefixes.keys().next().value as string);
      prefixes.set(address, prefix);
      return prefix;
    };
  } else if (HEADER_SPEC.test(cohort)) {
    kind = 'header';
    const name = cohort.slice(7).toLowerCase();
    // Repeated, it is refused (400) like a repeated identity header: a joined value would be a cohort of its own.
    read = (req) => singleHeader(req, name);
  } else if (JWT_SPEC.test(cohort)) {
    kind = 'jwt';
    const claim = cohort.slice(4);
    read = (req) => {
      const value = jwtClaims(req)?.[claim];
      return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value)) ? String(value) : undefined;
    };
  } else {
    const n = Number(cohort.slice(7));
    kind = `prefix${n}`;
    // A raw identity no longer than the prefix would make the cohort the identity itself: none then.
    read = (_req, rawId) => (rawId !== undefined && rawId.length > n ? rawId.slice(0, n) : undefined);
  }
  const hash = (raw: string): string =>
    (config.idSecret ? createHmac('sha256', config.idSecret) : createHash('sha256')).update(`cohort:${kind}:${raw}`).digest('hex').slice(0, 32);
  // Hashing is the costly part and a cohort key repeats across its members: the last hashes are kept.
  // Only short keys: a client may send a header or claim of kilobytes, and 10 000 of those would be a
  // lot of memory to hold for it.
  const hashed = new Map<string, string>();
  const hashOf = (raw: string): string => {
    if (raw.length > MAX_CACHED_KEY) return hash(raw);
    let id = hashed.get(raw);
    if (id === undefined) {
      id = hash(raw);
      if (hashed.size >= 10_000) hashed.delete(hashed.keys().next().value as string);
      hashed.set(raw, id);
    }
    return id;
  };
  return (req, rawId) => {
    const raw = read(req, rawId);
    if (raw === undefined || raw === null || raw === '') return undefined;
    return hashOf(String(raw));
  };
}
