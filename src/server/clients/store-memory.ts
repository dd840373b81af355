/**
 * The in-process client store: one process, bounded. A Map kept in least-recently-used order
 * (re-inserted on every touch), at most `maxClients` entries, each forgotten `ttlMs` after its last
 * update. Updates are atomic because they run synchronously between two awaits.
 */
import type { ClientState } from '../../detection/types.js';
import type { ClientStore, StoredClient } from './store.js';

export interface MemoryStoreOptions {
  /** Most clients kept; the least recently seen is dropped beyond it. Default 100000. */
  maxClients?: number;
  /** A client untouched this long is forgotten, milliseconds. Default 6 hours. */
  ttlMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

interface Entry {
  state: ClientState;
  expiresAt: number;
}

export interface MemoryClientStore extends ClientStore {
  readonly size: number;
  /** Synchronous variants, for the gate's local fallback. */
  getSync(id: string): ClientState | undefined;
  updateSync<T>(id: string, fn: (state: ClientState | undefined) => { state: ClientState; result: T }): T;
}

export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryClientStore {
  const maxClients = options.maxClients ?? 100_000;
  const ttlMs = options.ttlMs ?? 6 * 3600_000;
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();

  const live = (id: string): Entry | undefined => {
    const entry = entries.get(id);
    if (!entry) return undefined;
    if (entry.expiresAt <= now()) {
      entries.delete(id);
      return undefined;
    }
    return entry;
  };

  const getSync = (id: string): ClientState | undefined => {
    const entry = live(id);
    if (!entry) return undefined;
    entries.delete(id);
    entries.set(id, entry);
    return entry.state;
  };

  const updateSync = <T>(id: string, fn: (state: ClientState | undefined) => { state: ClientState; result: T }): T => {
    const { state, result } = fn(live(id)?.state);
    entries.delete(id);
    entries.set(id, { state, expiresAt: now() + ttlMs });
    // Map iteration follows insertion order: the first key is the least recently touched.
    while (entries.size > maxClients) entries.delete(entries.keys().next().value as string);
    return result;
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
    list: async (limit) => {
      const out: StoredClient[] = [];
      const time = now();
      for (const [id, entry] of entries) {
        if (out.length >= limit) break;
        if (entry.expiresAt > time) out.push({ id, state: entry.state });
      }
      return out;
    },
    close: async () => entries.clear(),
  };
}
