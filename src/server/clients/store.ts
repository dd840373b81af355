/**
 * Where client states live. `update` runs a pure function on the current state atomically: no
 * other update of the same client interleaves (the Redis store may run the function more than once
 * on a conflict, so it must have no side effects). Keys are hashed client ids.
 *
 * Both stores are bounded (maxClients). Each write carries the client's rank (0: clean, 1: escalated,
 * 2: throttled, 3: refused); beyond the cap the store forgets the lowest rank first, the least recently
 * written (memory: touched) first within a rank, so flagged clients' states are kept longest.
 *
 * An error thrown by `fn` itself (a detector that rejects the observation) is passed on as it is:
 * only the store's own failures are ClientStoreErrors.
 */
import type { ClientState } from '../../detection/types.js';

export interface StoredClient {
  readonly id: string;
  readonly state: ClientState;
}

/** Eviction ranks: the lowest goes first beyond the store's cap. */
export const CLEAN_RANK = 0;
export const MAX_RANK = 3;

export type UpdateFn<T> = (state: ClientState | undefined) => { state: ClientState; result: T; rank?: number };

export interface ClientStore {
  readonly kind: 'memory' | 'redis';
  get(id: string): Promise<ClientState | undefined>;
  /** Applies `fn` to the current state (undefined when none) and stores its `state` with its `rank` (default 0); resolves with its `result`. */
  update<T>(id: string, fn: UpdateFn<T>): Promise<T>;
  /**
   * A request answered at admission (refused or throttled, so never observed) still counts as the
   * client's last request: its record lives `ttlMs` from now, state unchanged. Without it a thief
   * that keeps knocking would be forgotten `ttlMs` after its last answered query and come back clean.
   * Nothing happens for a client the store does not hold.
   */
  keepAlive(id: string): Promise<void>;
  /**
   * A paced client's slot (a ladder `throttle:SECONDS` step): takes it when free, atomically across
   * every process sharing the store, and holds it `ms`. Resolves with 0 when taken, else with the
   * milliseconds until it frees. Independent of the client's state (a slot outlives an eviction by at
   * most `ms`).
   */
  reserve(id: string, ms: number): Promise<number>;
  /** Keeps a slot taken until `ms` from now, or longer if it was already (a paced request of several rows). */
  hold(id: string, ms: number): Promise<void>;
  /** Up to `limit` stored clients, the highest ranks first (for the admin route). */
  list(limit: number): Promise<StoredClient[]>;
  close(): Promise<void>;
}

/** A store that cannot answer (Redis unreachable, too many write conflicts): the gate applies its fail mode. */
export class ClientStoreError extends Error {
  override name = 'ClientStoreError';
}
