/**
 * The detection layer's public API: pure per-client detectors (windows, PRADA, HODA), the policy and
 * their state at the top; math/ holds the statistics they rest on, above/ the detection above the
 * client (population views, query fingerprints), whose state the serving layer keeps across clients.
 */
export type { Assessment, ClientAction, ClientDetection, ClientObservation, ClientState, DetectorVerdict } from './types.js';
export { createClientDetection, stateSizeBound, type ClientDetectionWithConfig, type DetectionState } from './client-detection.js';
export { DEFAULT_OPTIONS, resolveOptions, type DetectionConfig, type DetectionOptions } from './config.js';
export { DetectionConfigError, DetectionInputError } from './errors.js';
export { shapiroWilk, type ShapiroWilkResult } from './math/shapiro-wilk.js';
export { normalCdf, normalQuantile, normalUpperTail } from './math/normal.js';
export { calibrateHoda, hardnessFromLabels, hardnessHistogram, pearsonDistance, type HodaCalibration, type HodaThreshold } from './hoda.js';
export type { PolicyStep } from './policy.js';
export { createCohortDetection, type FingerprintState } from './client-detection.js';
export {
  calibratePopulation,
  initialAlarmState,
  populationVerdicts,
  POPULATION_DEFAULTS,
  resolvePopulationOptions,
  stepAlarm,
  summarise,
  countsLength,
  type AlarmState,
  type PopulationCalibration,
  type PopulationConfig,
  type PopulationLayout,
  type PopulationOptions,
} from './above/population.js';
export {
  FINGERPRINT_DEFAULTS,
  fingerprintRows,
  resolveFingerprintOptions,
  sharedHashes,
  type FingerprintConfig,
  type FingerprintOptions,
} from './above/fingerprint.js';
