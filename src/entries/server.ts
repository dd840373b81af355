/**
 * `model-stealing-defense/server`: the Express middleware, the proxy, the codecs, client detection's
 * stores and batching over any surrogate. It depends on the surrogate's interface only, so a proxy
 * that rounds loads no TensorFlow.js (surrogates themselves: `model-stealing-defense/models`).
 */
export { poisonPredictions, type PoisonPredictionsMiddleware } from '../server/middleware.js';
export { createDefenseProxy, startDefenseProxy, type DefenseProxy, type ProxyOptions, type RunningProxy } from '../server/proxy.js';
export type { RouteOptions } from '../server/proxy/routes.js';
export type { DefenseOption, ServingOptions } from '../server/options.js';
export type { ContextProvider, FailureMode } from '../server/perturber.js';
export {
  jsonPathCodec,
  kserveV2Codec,
  tfServingCodec,
  type Codec,
  type InputRows,
  type JsonPathOptions,
  type KServeV2Options,
  type ProtocolConfig,
  type ProtocolName,
  type TfServingOptions,
} from '../server/protocols/index.js';
export {
  batchedSurrogateContext,
  type AsyncProbabilityModel,
  type BatchedContextModels,
  type BatchedContextProvider,
} from '../server/batching/batched-context.js';
export { createBatcher, type Batcher } from '../server/batching/batcher.js';
export type { BatchingOptions } from '../server/batching/options.js';
export type { ImageInputOptions, InputOptions } from '../server/inputs/index.js';
export {
  createMemoryStore,
  createRedisStore,
  ClientRefusal,
  type ClientsOptions,
  type ClientStore,
  type CohortOption,
  type CohortSummary,
  type FingerprintServingOptions,
  type IdentityOption,
  type PopulationOverview,
  type PopulationServingOptions,
  type MemoryStoreOptions,
  type RedisStoreOptions,
  type StoreFailMode,
  type SuspiciousClient,
} from '../server/clients/index.js';
export { recordEvaluation, type RequestOutcome } from '../server/metrics.js';
export { defenseRecordOf, type DefenseRecord } from '../server/logger.js';
export { AnswerFormatError, OverloadedError, RequestFormatError, ServingError, ServingOptionError } from '../server/errors.js';
