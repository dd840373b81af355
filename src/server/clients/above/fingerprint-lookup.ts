/**
 * The fingerprints of a request's rows, looked up in (then written to) the fingerprint store: this
 * process's until the shared Redis is attached. A row that shares matchThreshold hashes with a query
 * of another identity is marked matched.
 */
import type { Logger } from 'pino';
import { fingerprintRows, type FingerprintConfig } from '../../../detection/above/fingerprint.js';
import type { FingerprintServingOptions } from '../options.js';
import type { RedisClientStore } from '../store-redis.js';
import {
  createMemoryFingerprintStore,
  createRedisFingerprintStore,
  identityQuota,
  type FingerprintStore,
  type FingerprintStoreEvents,
  type GenerationFull,
} from './fingerprint-store.js';

/** Where a full generation is reported: one warn line and a count, no client in either. */
export interface GenerationFullReport {
  logger?: Logger;
  count(): void;
}

export class FingerprintLookup {
  private store: FingerprintStore;
  private storeError: ((error: unknown) => void) | undefined;
  // One request's fingerprints, reused: the stores read them before check returns.
  private prints = new Int32Array(0);

  private readonly events: FingerprintStoreEvents = {
    generationFull: ({ store, entries }: GenerationFull) => {
      this.fullReport?.count();
      this.fullReport?.logger?.warn(
        { store, entriesPerGeneration: entries, maxEntriesPerIdentity: identityQuota(entries, this.options?.maxEntriesPerIdentity) },
        'fingerprint store generation full: many identities filled it (a many-key flood, or maxEntries small for the traffic); until the next generation, older fingerprints go early (memory) or new ones are not recorded (Redis)',
      );
    },
  };

  constructor(
    private readonly config: FingerprintConfig,
    private readonly options: FingerprintServingOptions | undefined,
    /** Counts the matched rows. */
    private readonly countMatches: (rows: number) => void,
    private readonly fullReport?: GenerationFullReport,
  ) {
    this.store = createMemoryFingerprintStore(config, options, this.events);
  }

  /** Per row 1 when it matched another identity's query; undefined without inputs. At once in memory, a promise with Redis. */
  matches(
    clientId: string,
    inputs: { rows: number; cols: number; data: Float32Array } | undefined,
    time: number,
  ): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    if (!inputs || inputs.rows === 0) return undefined;
    const size = inputs.rows * this.config.hashes;
    if (this.prints.length !== size) this.prints = new Int32Array(size);
    fingerprintRows(this.config, inputs.rows, inputs.cols, inputs.data, this.prints);
    let shared: Uint8Array | Promise<Uint8Array>;
    try {
      shared = this.store.check(clientId, this.prints, inputs.rows, time);
    } catch (error) {
      return this.storeFailed(error);
    }
    // The memory store answers at once: no promise to wait for on every request.
    return shared instanceof Promise ? shared.then(this.matchedRows, this.storeFailed) : this.matchedRows(shared);
  }

  /** Fingerprint hashes held. */
  size(): number {
    return this.store.size();
  }

  /** From now on the fingerprints are shared through Redis; its failures go to `onError`. */
  attachRedis(store: RedisClientStore, onError: (error: unknown) => void): void {
    this.store = createRedisFingerprintStore(store.connection, store.keyPrefix, this.config, this.options, this.events);
    this.storeError = onError;
  }

  close(): Promise<void> {
    return this.store.close();
  }

  /** Per row 1 when it shared matchThreshold hashes with a query of another identity (in place: the store's answer is this request's own). */
  private readonly matchedRows = (shared: Uint8Array): Uint8Array => {
    let matched = 0;
    for (let r = 0; r < shared.length; r++) {
      shared[r] = shared[r] >= this.config.matchThreshold ? 1 : 0;
      matched += shared[r];
    }
    if (matched) this.countMatches(matched);
    return shared;
  };

  // The shared store failed: this request's rows count as unmatched (the outage is counted and logged).
  private readonly storeFailed = (error: unknown): undefined => {
    this.storeError?.(error);
    return undefined;
  };
}
