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
 *
 * One identity's rows are written freely up to `maxEntriesPerIdentity` new hashes in a generation:
 * without a bound, one key's flood of distinct rows (random noise) fills a generation, which evicts
 * everyone's fingerprints in memory and stops every later write in Redis, so cross-identity matching
 * is off for all. Past its quota a row is written with probability quotaRows / n (n: the rows it
 * offered in the generation), whole or not at all: a flood's entries grow only logarithmically, and no
 * key can use up its quota and then be certain that its next queries go unrecorded (junk rows sent
 * first dilute the sample, as far as the per-client budget lets them). Every row is still looked up.
 * The counts live beside the current generation (in Redis the hash key `<prefix>~fpn:<generation>`,
 * expiring shortly after its generation ends).
 */
import { getRandomValues, randomInt } from 'node:crypto';
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
  /**
   * New hashes one identity may add to a generation before only a sample of its rows is written
   * (rewriting a hash the generation holds takes no room, so no quota: an honest client re-sending
   * its rows is not held back).
   * Default: a hundredth of a generation (maxEntries / 200), at least 1000; never more than a generation.
   */
  maxEntriesPerIdentity?: number;
}

export const FINGERPRINT_STORE_DEFAULTS = { maxEntries: 500_000, ttlMs: 3_600_000 } as const;

/**
 * The quota of new hashes per identity and generation (`cap`: a generation's hashes). A hundredth of
 * a generation: filling one takes a hundred keys within ttl/2, each of them young, which the
 * population's young view sees; at the default 2500 hashes, 125 rows of 20 per key and half hour,
 * past which only a sample of a key's rows is written (all are still looked up). At least 1000 so
 * that a small store still records a client's ordinary traffic.
 */
export function identityQuota(cap: number, maxEntriesPerIdentity?: number): number {
  return Math.max(1, Math.min(cap, Math.floor(maxEntriesPerIdentity ?? Math.max(1000, Math.floor(cap / 100)))));
}

/** A generation that filled: reported at most once per generation (Redis: across replicas). No client in it. */
export interface GenerationFull {
  store: 'memory' | 'redis';
  /** The hashes a generation holds. */
  entries: number;
}

export interface FingerprintStoreEvents {
  /** A generation filled: memory rotated early (at most once per ttl/2), Redis refused a write. */
  generationFull?(event: GenerationFull): void;
}

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

/** Draws in [0, 1): which rows past an identity's quota are written. */
export type RandomSource = () => number;

/** How long a Redis generation's quota counts outlive it. */
const COUNTS_GRACE_MS = 10_000;

/**
 * The default draws: from the operating system's generator, not Math.random (whose state a few
 * outputs give away), so that which of a flooding key's rows are recorded cannot be predicted.
 */
const secureRandom: RandomSource = (() => {
  const buffer = new Uint32Array(256);
  let next = buffer.length;
  return () => {
    if (next === buffer.length) {
      getRandomValues(buffer);
      next = 0;
    }
    return buffer[next++] / 2 ** 32;
  };
})();

/** Rows of `hashes` that fill `quota`: the scale of sampling past it (at least 1, so a quota under one row still samples). */
const quotaRows = (quota: number, hashes: number): number => Math.max(1, Math.floor(quota / hashes));

/** A 24-bit digest of an owner id (FNV-1a), for compact entries; two given owners collide with probability about 1 in 16 million (N owners: about N / 2^24 of them share a tag). */
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
  /** Per owner tag, where its counts are: an entry only for an owner that wrote a new hash, so at most cap entries. */
  private readonly owners = new Map<number, number>();
  /**
   * Per owner, side by side: the new hashes it wrote and the rows it offered that needed room (written
   * or not). A typed array beside a map of small integers: no object per owner.
   */
  counts = new Uint32Array(0);

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

  /** Where the owner's counts are in `counts`; -1 when it wrote nothing yet. */
  countsAt(tag: number): number {
    return this.owners.get(tag) ?? -1;
  }

  /** Drops the counts per owner (a generation that is no longer current). */
  forgetCounts(): void {
    this.owners.clear();
    this.counts = new Uint32Array(0);
  }

  /** Stores the owner's counts (`at` from countsAt); an owner that wrote nothing takes no entry. */
  saveCounts(tag: number, at: number, added: number, offered: number): void {
    if (at < 0) {
      if (added === 0) return;
      at = this.owners.size * 2;
      if (at >= this.counts.length) {
        const grown = new Uint32Array(Math.max(64, this.counts.length * 2));
        grown.set(this.counts);
        this.counts = grown;
      }
      this.owners.set(tag, at);
    }
    this.counts[at] = added;
    this.counts[at + 1] = Math.min(offered, 0xffffffff);
  }

  has(hash: number): boolean {
    const slots = this.slots;
    return slots !== undefined && slots[this.find(slots, hash)] === hash;
  }

  /** Sets the entry; true when the hash is new to the generation. A new hash is dropped when the generation is full. */
  set(hash: number, tag: number, query: number): boolean {
    const slots = this.slots ?? this.allocate();
    const at = this.find(slots, hash);
    let added = false;
    if (slots[at] !== hash) {
      if (this.size >= this.cap) return false;
      slots[at] = hash;
      this.size++;
      added = true;
    }
    slots[at + 1] = tag;
    slots[at + 2] = query;
    return added;
  }
}

export function createMemoryFingerprintStore(
  config: Pick<FingerprintConfig, 'hashes'>,
  options: FingerprintStoreOptions = {},
  events: FingerprintStoreEvents = {},
  random: RandomSource = secureRandom,
): FingerprintStore {
  const maxEntries = options.maxEntries ?? FINGERPRINT_STORE_DEFAULTS.maxEntries;
  const half = Math.max(1, Math.floor(options.ttlMs ?? FINGERPRINT_STORE_DEFAULTS.ttlMs) / 2);
  const cap = Math.max(1, Math.floor(maxEntries / 2));
  const quota = identityQuota(cap, options.maxEntriesPerIdentity);
  const sampleRows = quotaRows(quota, config.hashes);
  let current = new Generation(cap);
  let previous = new Generation(cap);
  let startedAt = -Infinity;
  // Under a many-key flood every early rotation is a new generation: reported once per ttl/2, not each.
  let reportedAt = -Infinity;
  // The looked-up entries of one request, reused (check runs to its end without awaiting).
  let entries = new Float64Array(64);
  const rotate = (now: number): void => {
    previous = now - startedAt >= 2 * half ? new Generation(cap) : current;
    // Quota counts are read in the current generation only.
    previous.forgetCounts();
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
      // The owner's counts are read once and written back once: no map access per hash.
      let at = current.countsAt(tag);
      let added = at < 0 ? 0 : current.counts[at];
      let offered = at < 0 ? 0 : current.counts[at + 1];
      for (let r = 0; r < rows; r++) {
        const from = r * k;
        // One draw per row, used or not, as the Redis store draws: the same draws record the same rows in both.
        const draw = random();
        let fresh = 0;
        for (let j = from; j < from + k; j++) if (fingerprints[j] && !current.has(fingerprints[j])) fresh++;
        // A row of held hashes takes no room: always rewritten. Otherwise the whole row, or none of it.
        if (fresh > 0) {
          offered++;
          if (added + fresh > quota && draw * offered >= sampleRows) continue;
          // A full generation rotates early: at most maxEntries in the two (an empty one has nothing to give).
          if (current.size + fresh > cap && current.size > 0) {
            rotate(now);
            at = -1;
            added = 0;
            offered = 1;
            if (now - reportedAt >= half) {
              reportedAt = now;
              events.generationFull?.({ store: 'memory', entries: cap });
            }
          }
        }
        const query = queryNumber();
        for (let j = from; j < from + k; j++) if (fingerprints[j] && current.set(fingerprints[j], tag, query)) added++;
      }
      current.saveCounts(tag, at, added, offered);
      return shared;
    },
    size: () => current.size + previous.size,
    close: async () => {
      current = new Generation(cap);
      previous = new Generation(cap);
    },
  };
}

// KEYS[1] current generation, KEYS[2] previous one, KEYS[3] the current generation's counts per owner
// ('<new hashes>:<rows offered>'). ARGV[1] owner tag, ARGV[2] hashes per row, ARGV[3] cap per
// generation, ARGV[4] the owner's quota of new hashes, ARGV[5] ms until the current generation is no
// longer read, ARGV[6] rows, ARGV[7] ms until the current generation ends, then per row its entry,
// then per row a uniform draw in [0, 1) (drawn in Node: Lua's math.random is not a safe source),
// then rows × k hashes. Returns per row the best count shared with one query of another owner, then
// the generation's size, then 1 when this call is the first refused for a full generation.
const CHECK = `
local owner = ARGV[1]
local k = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local rows = tonumber(ARGV[6])
local base = 7 + 2 * rows
local out = {}
-- Whether the current generation holds a hash, from the lookups, then kept up to date by the writes.
local held = {}
for r = 0, rows - 1 do
  local counts = {}
  local best = 0
  for j = 1, k do
    local h = ARGV[base + r * k + j]
    if h ~= '0' then
      local e = redis.call('HGET', KEYS[1], h)
      held[h] = e and true or false
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
local added, offered = 0, 0
local stored = redis.call('HGET', KEYS[3], owner)
if stored then
  local a, o = string.match(stored, '^(%d+):(%d+)$')
  added, offered = tonumber(a) or 0, tonumber(o) or 0
end
local before = offered
local sampleRows = math.max(1, math.floor(quota / k))
local full = false
for r = 0, rows - 1 do
  local from = base + r * k
  local fresh = 0
  for j = 1, k do
    local h = ARGV[from + j]
    if h ~= '0' and not held[h] then fresh = fresh + 1 end
  end
  -- A row of held hashes takes no room: always rewritten. Otherwise the whole row, or none of it.
  local write = true
  if fresh > 0 then
    offered = offered + 1
    write = added + fresh <= quota or tonumber(ARGV[8 + rows + r]) * offered < sampleRows
    if write and size + fresh > cap then
      write = false
      full = true
    end
  end
  if write then
    local entry = ARGV[8 + r]
    for j = 1, k do
      local h = ARGV[from + j]
      if h ~= '0' then
        if redis.call('HSET', KEYS[1], h, entry) == 1 then
          size = size + 1
          added = added + 1
        end
        held[h] = true
      end
    end
  end
end
-- Counts only for an owner that wrote: at most one field per hash held.
if offered > before and added > 0 then redis.call('HSET', KEYS[3], owner, added .. ':' .. offered) end
-- The first refusal of the generation, across replicas, is the one reported.
local first = 0
if full then first = redis.call('HSETNX', KEYS[3], 'full', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
out[rows + 1] = size
out[rows + 2] = first
return out
`;

/** Rows per script call: a bounded time during which Redis serves no other client. */
const ROWS_PER_CALL = 64;

type FingerprintRedis = Redis & {
  msdFingerprints(current: string, previous: string, added: string, ...args: (string | number)[]): Promise<number[]>;
};

/** The shared store on the client store's Redis connection (`redis`), keys under `prefix`. */
export function createRedisFingerprintStore(
  redis: Redis,
  prefix: string,
  config: Pick<FingerprintConfig, 'hashes'>,
  options: FingerprintStoreOptions = {},
  events: FingerprintStoreEvents = {},
  random: RandomSource = secureRandom,
): FingerprintStore {
  const maxEntries = options.maxEntries ?? FINGERPRINT_STORE_DEFAULTS.maxEntries;
  const ttlMs = Math.max(2, Math.floor(options.ttlMs ?? FINGERPRINT_STORE_DEFAULTS.ttlMs));
  const half = Math.floor(ttlMs / 2);
  const cap = Math.max(1, Math.floor(maxEntries / 2));
  const quota = identityQuota(cap, options.maxEntriesPerIdentity);
  const r = redis as FingerprintRedis;
  if (typeof r.msdFingerprints !== 'function') r.defineCommand('msdFingerprints', { numberOfKeys: 3, lua: CHECK });
  let lastSize = 0;
  return {
    kind: 'redis',
    async check(owner, fingerprints, rows, now) {
      const k = config.hashes;
      const generation = Math.floor(now / half);
      const tag = String(ownerTag(owner));
      // A generation is read until the next one ends: a TTL of ttl from the last write would keep a third key alive.
      const expiresInMs = Math.max(1, (generation + 2) * half - now);
      // The quota counts are read only during their own generation (each has its own key), kept a little
      // past its end: a request whose chunks straddle the end must not find them gone and start afresh.
      const countsExpireInMs = Math.max(1, (generation + 1) * half - now) + COUNTS_GRACE_MS;
      // Redis serves nothing else while a script runs: a large request goes in chunks of rows, one call
      // each (its rows still never match one another: they share the owner). Every chunk's arguments are
      // built before the first call: the caller reuses `fingerprints` once check returns.
      const calls: { from: number; count: number; args: (string | number)[] }[] = [];
      for (let from = 0; from < rows; from += ROWS_PER_CALL) {
        const count = Math.min(ROWS_PER_CALL, rows - from);
        const args: (string | number)[] = [tag, k, cap, quota, expiresInMs, count, countsExpireInMs];
        for (let i = 0; i < count; i++) args.push(`${tag}:${queryNumber()}`);
        for (let i = 0; i < count; i++) args.push(String(random()));
        for (let i = from * k; i < (from + count) * k; i++) args.push(fingerprints[i] ? fingerprints[i].toString(36) : '0');
        calls.push({ from, count, args });
      }
      const shared = new Uint8Array(rows);
      for (const { from, count, args } of calls) {
        const result = await r.msdFingerprints(`${prefix}~fp:${generation}`, `${prefix}~fp:${generation - 1}`, `${prefix}~fpn:${generation}`, ...args);
        lastSize = Number(result[count]) || 0;
        if (Number(result[count + 1]) === 1) events.generationFull?.({ store: 'redis', entries: cap });
        for (let i = 0; i < count; i++) shared[from + i] = Math.min(255, Number(result[i]) || 0);
      }
      return shared;
    },
    size: () => lastSize,
    close: async () => {},
  };
}
