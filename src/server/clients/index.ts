/** Client identity, detection state stores and the per-request gate. Re-exports only. */
export { adminHandler, DEFAULT_ADMIN_PATH } from './admin.js';
export {
  ClientRefusal,
  createClientGate,
  NEW_CLIENTS_DEFAULTS,
  type ClientGate,
  type ClientTicket,
  type DefenseOverride,
  type SuspiciousClient,
} from './gate.js';
export { ANONYMOUS_ID, clientAddress, createIdentifier, type ClientIdentity, type IdentityOption } from './identity.js';
export {
  CLIENTS_OPTION_NAMES,
  type ClientsOptions,
  type CohortOption,
  type FingerprintServingOptions,
  type NewClientsOption,
  type PopulationServingOptions,
  type StoreFailMode,
  type StoreOption,
} from './options.js';
export { addressPrefix, COHORT_PREFIX, createCohortReader } from './above/cohort.js';
export {
  createMemoryFingerprintStore,
  createRedisFingerprintStore,
  FINGERPRINT_STORE_DEFAULTS,
  type FingerprintStore,
  type FingerprintStoreOptions,
} from './above/fingerprint-store.js';
export { createPopulationTracker, type LayoutStatus, type PopulationTracker, type PopulationView, type ViewStatus } from './above/population.js';
export type { CohortSummary, PopulationOverview } from './above/above-client.js';
export { ClientStoreError, type ClientStore, type StoredClient } from './store.js';
export { createMemoryStore, DEFAULT_MEMORY_MAX_CLIENTS, type MemoryClientStore, type MemoryStoreOptions } from './store-memory.js';
export { createRedisStore, DEFAULT_REDIS_MAX_CLIENTS, type RedisClientStore, type RedisStoreOptions } from './store-redis.js';
