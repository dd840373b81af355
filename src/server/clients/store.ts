/**
 * Where client states live. `update` runs a pure function on the current state atomically: no
 * other update of the same client interleaves (the Redis store may run the function more than once
 * on a conflict, so it must have no side effects). Keys are hashed client ids.
 */
import type { ClientState } from '../../detection/types.js';

export interface StoredClient {
  readonly id: string;
  readonly state: ClientState;
}

export interface ClientStore {
  readonly kind: 'memory' | 'redis';
  get(id: string): Promise<ClientState | undefined>;
  /** Applies `fn` to the current state (undefined when none) and stores its `state`; resolves with its `result`. */
  update<T>(id: string, fn: (state: ClientState | undefined) => { state: ClientState; result: T }): Promise<T>;
  /** Up to `limit` stored clients, in no particular order (for the admin route). */
  list(limit: number): Promise<StoredClient[]>;
  close(): Promise<void>;
}

/** A store that cannot answer (Redis unreachable, too many write conflicts): the gate applies its fail mode. */
export class ClientStoreError extends Error {
  override name = 'ClientStoreError';
}
