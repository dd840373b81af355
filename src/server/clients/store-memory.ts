/**
 * The in-process client store: one process, bounded. At most `maxClients` entries, each forgotten
 * `ttlMs` after its last update or kept-alive request (a refused one). Beyond the cap the lowest rank goes first (clean before escalated
 * before throttled before refused), the least recently seen first within a rank (see RankedMap), so
 * a flood of fresh identities cannot push a flagged client's history out while a clean one is left.
 * Updates are atomic because they run synchronously between two awaits.
 */
import type { ClientState } from '../../detection/types.js';
import { RankedMap } from './ranked-map.js';
import { MAX_RANK, type ClientStore, type StoredClient, type UpdateFn } from './store.js';

export interface MemoryStoreOptions {
  /** Most clients kept; beyond it the least recently seen of the lowest rank is dropped. Default 100000. */
  maxClients?: number;
  /** A client without an update or a refused request this long is forgotten, milliseconds. Default 6 hours. */
  ttlMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export const DEFAULT_MEMORY_MAX_CLIENTS = 100_000;

interface Entry {
  state: ClientState;
  expiresAt: number;
}

export interface MemoryClientStore extends ClientStore {
  readonly size: number;
  /** Synchronous variants, for the gate's local fallback. */
  getSync(id: string): ClientState | undefined;
  updateSync<T>(id: string, fn: UpdateFn<T>): T;
}

export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryClientStore {
  const maxClients = options.maxClients ?? DEFAULT_MEMORY_MAX_CLIENTS;
  const ttlMs = options.ttlMs ?? 6 * 3600_000;
  const now = options.now ?? Date.now;
  const entries = new RankedMap<Entry>(maxClients, MAX_RANK + 1);

  const live = (id: string, touch = false): Entry | undefined => {
    const entry = touch ? entries.getTouched(id) : entries.get(id);
    if (!entry) return undefined;
    if (entry.expiresAt <= now()) {
      entries.delete(id);
      return undefined;
    }
    return entry;
  };

  const getSync = (id: string): ClientState | undefined => live(id, true)?.state;

  const updateSync = <T>(id: string, fn: UpdateFn<T>): T => {
    const { state, result, rank } = fn(live(id)?.state);
    entries.set(id, { state, expiresAt: now() + ttlMs }, rank ?? 0);
    return result;
  };

  // Paced clients' slots: id → when the slot frees, in the order taken, so that beyond the cap the
  // oldest goes (the one most likely free already).
  const slots = new Map<string, number>();
  const reserveSync = (id: string, ms: number): number => {
    const time = now();
    const until = slots.get(id);
    if (until !== undefined && until > time) return until - time;
    slots.delete(id);
    slots.set(id, time + ms);
    if (slots.size > maxClients) slots.delete(slots.keys().next().value as string);
    return 0;
  };
  const holdSync = (id: string, ms: number): void => {
    const until = now() + ms;
    if ((slots.get(id) ?? 0) < until) {
      slots.delete(id);
      slots.set(id, until);
      if (slots.size > maxClients) slots.delete(slots.keys().next().value as string);
    }
  };

  const keepAliveSync = (id: string): void => {
    const entry = live(id, true);
    if (entry) entry.expiresAt = now() + ttlMs;
  };

  return {
    kind: 'memory',
    get size() {
      return entries.size;
    },
    getSync,
    updateSync,
    get: async (id) => getSync(id),
    update: async (id, fn) => updateSync(id, fn),
    keepAlive: async (id) => keepAliveSync(id),
    reserve: async (id, ms) => reserveSync(id, ms),
    hold: async (id, ms) => holdSync(id, ms),
    list: async (limit) => {
      const out: StoredClient[] = [];
      const time = now();
      for (const [id, entry] of entries.entries()) {
        if (out.length >= limit) break;
        if (entry.expiresAt > time) out.push({ id, state: entry.state });
      }
      return out;
    },
    close: async () => {
      entries.clear();
      slots.clear();
    },
  };
}
