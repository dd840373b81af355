/** The serving layer's public API: mount mode, proxy mode, codecs, metrics and logs. Re-exports only. */
export { poisonPredictions, type PoisonPredictionsMiddleware } from './middleware.js';
export { createDefenseProxy, startDefenseProxy, type DefenseProxy, type ProxyOptions, type RunningProxy } from './proxy.js';
export { parseRoutePattern, type RouteOptions } from './proxy/routes.js';
export type { DefenseOption, ServingOptions } from './options.js';
export type { ContextProvider, FailureMode } from './perturber.js';
export { surrogateContext, loadSurrogateContext } from './surrogate-context.js';
export {
  jsonPathCodec,
  kserveV2Codec,
  PROTOCOLS,
  resolveCodec,
  tfServingCodec,
  type AnswerView,
  type Codec,
  type EncodedImages,
  type InputRows,
  isEncodedImages,
  type RequestInputs,
  type JsonPathOptions,
  type KServeV2Options,
  type ProtocolConfig,
  type ProtocolName,
  type TfServingOptions,
} from './protocols/index.js';
export { shortestFloat32 } from './protocols/numbers.js';
export {
  createServingMetrics,
  DEFAULT_METRICS_PREFIX,
  metricsHandler,
  recordEvaluation,
  type EvaluationFigures,
  type MetricsOptions,
  type RequestOutcome,
  type ServingMetrics,
} from './metrics.js';
export { createHttpLogger, createLogger, defenseRecordOf, type DefenseRecord } from './logger.js';
export { AnswerFormatError, RequestFormatError, ServingError, ServingOptionError, type FailureOutcome } from './errors.js';
export {
  createInputReader,
  DEFAULT_MAX_IMAGE_BYTES,
  DEFAULT_MAX_PIXELS,
  resolveInputOptions,
  RESIZE_MODES,
  type ImageInputOptions,
  type InputOptions,
  type InputReader,
  type ResizeMode,
} from './inputs/index.js';
export {
  adminHandler,
  ClientRefusal,
  ClientStoreError,
  createClientGate,
  createIdentifier,
  createMemoryStore,
  createRedisStore,
  DEFAULT_ADMIN_PATH,
  type ClientGate,
  type ClientIdentity,
  type ClientsOptions,
  type ClientStore,
  type IdentityOption,
  type MemoryStoreOptions,
  type RedisStoreOptions,
  type StoreFailMode,
  type SuspiciousClient,
} from './clients/index.js';
export { createBatcher, type BatchForward, type Batcher, type BatcherConfig, type BatcherObserver } from './batching/batcher.js';
export {
  batchedSurrogateContext,
  mapContextInputs,
  type AsyncProbabilityModel,
  type BatchedContextModels,
  type BatchedContextProvider,
} from './batching/batched-context.js';
export { BATCHING_DEFAULTS, resolveBatching, type BatchingOptions, type ResolvedBatching } from './batching/options.js';
export { OverloadedError } from './errors.js';
export type { ContextProviderHooks } from './perturber.js';
