/**
 * One store of query fingerprints across all identities (Blacklight's design): each fingerprint hash
 * points at the last query that had it (its owner, a 24-bit digest of the hashed client id, and a
 * random query number). A new query looks its hashes up, counts them per earlier query of *another*
 * owner, and matches when one such query shares `matchThreshold` of them; then its own hashes are
 * written. Per row the answer is how many hashes the best other-owner query shared (0..hashes).
 *
 * Bounded and expiring: two generations, each at most maxEntries / 2 hashes and `ttlMs / 2` long; a
 * hash lives between ttl/2 and ttl after its last write. In memory, a full generation rotates early.
 * In Redis (shared by every replica) each generation is one hash key `<prefix>~fp:<generation>` that
 * expires when the generation after it ends (the last moment it is read): two live keys, whatever the
 * traffic; a full generation takes no more writes until the next one starts (lookups go on).
 */
import { randomInt } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { FingerprintConfig } from '../../../detection/above/fingerprint.js';

/** Query numbers: a per-process counter from a random start (distinct within a process, unlikely to collide across). */
let nextQuery = randomInt(2 ** 26);
const queryNumber = (): number => (nextQuery = (nextQuery + 1) % 2 ** 26);

export interface FingerprintStoreOptions {
  /** Hashes kept, both generations together. Default 500 000 (the memory it takes: docs/detection.md#fingerprints). */
  maxEntries?: number;
  /** A hash is forgotten between ttlMs/2 and ttlMs after its last write. Default 1 hour. */
  ttlMs?: number;
}

export const FINGERPRINT_STORE_DEFAULTS = { maxEntries: 500_000, ttlMs: 3_600_000 } as const;

export interface FingerprintStore {
  readonly kind: 'memory' | 'redis';
  /**
   * Looks up and then records the fingerprints of one request's rows (rows × hashes, 0 = empty) for
   * `owner` (a hashed client id). Gives, per row, the most hashes shared with one earlier query of
   * another owner: at once in memory, a promise in Redis. `fingerprints` is read before check returns
   * (the caller may reuse it).
   */
  check(owner: string, fingerprints: Int32Array, rows: number, now: number): Uint8Array | Promise<Uint8Array>;
  /** Hashes held (memory: both generations; Redis: the current generation, as last seen). */
  size(): number;
  close(): Promise<void>;
}

/** A 24-bit digest of an owner id (FNV-1a), for compact entries; collisions between two owners are about 1 in 16 million. */
export function ownerTag(owner: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < owner.length; i++) h = Math.imul(h ^ owner.charCodeAt(i), 0x01000193) >>> 0;
  return (h >>> 8) + 1;
}

const QUERY_SPACE = 2 ** 26;

/** Best count per row from the looked-up entries (entry = owner * 2^26 + query; 0 = none): k is small, so counted in place. */
function bestShared(entries: Float64Array, rows: number, k: number, owner: number): Uint8Array {
  const out = new Uint8Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * k;
    let best = 0;
    for (let j = 0; j < k; j++) {
      const e = entries[base + j];
      if (!e || Math.floor(e / QUERY_SPACE) === owner) continue;
      // Count e once, at its first occurrence in the row.
      let seen = false;
      for (let i = 0; i < j && !seen; i++) seen = entries[base + i] === e;
      if (seen) continue;
      let c = 1;
      for (let i = j + 1; i < k; i++) if (entries[base + i] === e) c++;
      if (c > best) best = c;
    }
    out[r] = Math.min(255, best);
  }
  return out;
}

/**
 * One generation in memory: an open-addressing hash table in one typed array, allocated lazily at a
 * fixed capacity: no per-entry objects for the garbage collector, whatever the traffic. A slot is
 * three integers side by side, the hash (0 = empty), the entry's owner tag and its query number, so
 * that a lookup touches one place in memory (the tables are larger than the processor's caches).
 */
class Generation {
  private slots: Int32Array | undefined;
  private mask = 0;
  size = 0;

  constructor(readonly cap: number) {}

  private allocate(): Int32Array {
    // A power of two at least twice the cap: probes stay short.
    let capacity = 16;
    while (capacity < 2 * this.cap) capacity *= 2;
    this.mask = capacity - 1;
    this.slots = new Int32Array(capacity * 3);
    return this.slots;
  }

  /** Where `hash` is, or the empty slot where it would go (an index into slots). */
  private find(slots: Int32Array, hash: number): number {
    const mask = this.mask;
    for (let at = Math.imul(hash, 0x9e3779b1) & mask; ; at = (at + 1) & mask) {
      const key = slots[at * 3];
      if (key === hash || key === 0) return at * 3;
    }
  }

  /** The entry (owner tag × 2^26 + query) of `hash`; 0 when it has none. */
  get(hash: number): number {
    const slots = this.slots;
    if (!slots) return 0;
    const at = this.find(slots, hash);
    return slots[at] === hash ? slots[at + 1] * QUERY_SPACE + slots[at + 2] : 0;
  }

  /** Sets the entry; false (nothing written) when the hash is new and the generation is full. */
  set(hash: number, tag: number, query: number): boolean {
    const slots = this.slots ?? this.allocate();
    const at = this.find(slots, hash);
    if (slots[at] !== hash) {
      if (this.size >= this.cap) return false;
      slots[at] = hash;
      this.size++;
    }
    slots[at + 1] = tag;
    slots[at + 2] = query;
    return true;
  }
}

export function createMemoryFingerprintStore(config: Pick<FingerprintConfig, 'hashes'>, options: FingerprintStoreOptions = {}): FingerprintStore {
  const maxEntries = options.maxEntries ?? FINGERPRINT_STORE_DEFAULTS.maxEntries;
  const half = Math.max(1, Math.floor(options.ttlMs ?? FINGERPRINT_STORE_DEFAULTS.ttlMs) / 2);
  const cap = Math.max(1, Math.floor(maxEntries / 2));
  let current = new Generation(cap);
  let previous = new Generation(cap);
  let startedAt = -Infinity;
  // The looked-up entries of one request, reused (check runs to its end without awaiting).
  let entries = new Float64Array(64);
  const rotate = (now: number): void => {
    previous = now - startedAt >= 2 * half ? new Generation(cap) : current;
    current = new Generation(cap);
    startedAt = now;
  };
  return {
    kind: 'memory',
    check(owner, fingerprints, rows, now) {
      if (now - startedAt >= half) rotate(now);
      const k = config.hashes;
      const tag = ownerTag(owner);
      const n = rows * k;
      if (entries.length < n) entries = new Float64Array(n);
      // Every row looked up before any is written: rows of one request never match one another.
      for (let i = 0; i < n; i++) {
        const h = fingerprints[i];
        entries[i] = h ? current.get(h) || previous.get(h) : 0;
      }
      const shared = bestShared(entries, rows, k, tag);
      for (let r = 0; r < rows; r++) {
        const query = queryNumber();
        for (let j = 0; j < k; j++) {
          const h = fingerprints[r * k + j];
          if (!h) continue;
          // A full generation rotates early: at most maxEntries in the two.
          if (!current.set(h, tag, query)) {
            rotate(now);
            current.set(h, tag, query);
          }
        }
      }
      return shared;
    },
    size: () => current.size + previous.size,
    close: async () => {
      current = new Generation(cap);
      previous = new Generation(cap);
    },
  };
}

// KEYS[1] current generation, KEYS[2] previous one. ARGV[1] owner tag, ARGV[2] hashes per row,
// ARGV[3] cap per generation, ARGV[4] ms until the current generation is no longer read, ARGV[5] rows, then per row its entry, then rows × k hashes.
// Returns per row the best count shared with one query of another owner.
const CHECK = `
local owner = ARGV[1]
local k = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local rows = tonumber(ARGV[5])
local base = 5 + rows
local out = {}
for r = 0, rows - 1 do
  local counts = {}
  local best = 0
  for j = 1, k do
    local h = ARGV[base + r * k + j]
    if h ~= '0' then
      local e = redis.call('HGET', KEYS[1], h)
      if not e then e = redis.call('HGET', KEYS[2], h) end
      if e and string.sub(e, 1, #owner + 1) ~= owner .. ':' then
        local c = (counts[e] or 0) + 1
        counts[e] = c
        if c > best then best = c end
      end
    end
  end
  out[r + 1] = best
end
local size = redis.call('HLEN', KEYS[1])
for r = 0, rows - 1 do
  local entry = ARGV[6 + r]
  for j = 1, k do
    local h = ARGV[base + r * k + j]
    if h ~= '0' and (size < cap or redis.call('HEXISTS', KEYS[1], h) == 1) then
      if redis.call('HSET', KEYS[1], h, entry) == 1 then size = size + 1 end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
out[rows + 1] = size
return out
`;

/** Rows per script call: a bounded time during which Redis serves no other client. */
const ROWS_PER_CALL = 64;

type FingerprintRedis = Redis & { msdFingerprints(current: string, previous: string, ...args: (string | number)[]): Promise<number[]> };

/** The shared store on the client store's Redis connection (`redis`), keys under `prefix`. */
export function createRedisFingerprintStore(
  redis: Redis,
  prefix: string,
  config: Pick<FingerprintConfig, 'hashes'>,
  options: FingerprintStoreOptions = {},
): FingerprintStore {
  const maxEntries = options.maxEntries ?? FINGERPRINT_STORE_DEFAULTS.maxEntries;
  const ttlMs = Math.max(2, Math.floor(options.ttlMs ?? FINGERPRINT_STORE_DEFAULTS.ttlMs));
  const half = Math.floor(ttlMs / 2);
  const cap = Math.max(1, Math.floor(maxEntries / 2));
  const r = redis as FingerprintRedis;
  if (typeof r.msdFingerprints !== 'function') r.defineCommand('msdFingerprints', { numberOfKeys: 2, lua: CHECK });
  let lastSize = 0;
  return {
    kind: 'redis',
    async check(owner, fingerprints, rows, now) {
      const k = config.hashes;
      const generation = Math.floor(now / half);
      const tag = String(ownerTag(owner));
      // A generation is read until the next one ends: a TTL of ttl from the last write would keep a third key alive.
      const expiresInMs = Math.max(1, (generation + 2) * half - now);
      // Redis serves nothing else while a script runs: a large request goes in chunks of rows, one call
      // each (its rows still never match one another: they share the owner). Every chunk's arguments are
      // built before the first call: the caller reuses `fingerprints` once check returns.
      const calls: { from: number; count: number; args: (string | number)[] }[] = [];
      for (let from = 0; from < rows; from += ROWS_PER_CALL) {
        const count = Math.min(ROWS_PER_CALL, rows - from);
        const args: (string | number)[] = [tag, k, cap, expiresInMs, count];
        for (let i = 0; i < count; i++) args.push(`${tag}:${queryNumber()}`);
        for (let i = from * k; i < (from + count) * k; i++) args.push(fingerprints[i] ? fingerprints[i].toString(36) : '0');
        calls.push({ from, count, args });
      }
      const shared = new Uint8Array(rows);
      for (const { from, count, args } of calls) {
        const result = await r.msdFingerprints(`${prefix}~fp:${generation}`, `${prefix}~fp:${generation - 1}`, ...args);
        lastSize = Number(result[count]) || 0;
        for (let i = 0; i < count; i++) shared[from + i] = Math.min(255, Number(result[i]) || 0);
      }
      return shared;
    },
    size: () => lastSize,
    close: async () => {},
  };
}
