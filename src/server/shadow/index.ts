/** The shadow attacker (see shadow.ts): options, the attacker, its gauges. Re-exports only. */
export { createShadowAttacker, DEFAULT_TIER, tierOf, type ShadowAnswer, type ShadowAttacker, type ShadowDeps, type ShadowRoundResult } from './shadow.js';
export {
  parseEvery,
  parseShadowField,
  resolveShadowOptions,
  SHADOW_ARCHS,
  SHADOW_FIELD_NAMES,
  SHADOW_FIELD_SCHEMAS,
  SHADOW_FIELDS,
  type ResolvedShadow,
  type ShadowArch,
  type ShadowEvery,
  type ShadowFieldName,
  type ShadowHeldOut,
  type ShadowOptions,
} from './options.js';
export { createShadowMetrics, registerAllShadowMetrics, type ShadowMetrics } from './metrics.js';
export { Reservoir, type ReservoirSnapshot } from './reservoir.js';
export type { TierFigures } from './protocol.js';
