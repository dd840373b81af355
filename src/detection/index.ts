/** The detection layer's public API: pure per-client detectors, the policy and their state. */
export type { Assessment, ClientAction, ClientDetection, ClientObservation, ClientState, DetectorVerdict } from './types.js';
export { createClientDetection, stateSizeBound, type ClientDetectionWithConfig, type DetectionState } from './client-detection.js';
export { DEFAULT_OPTIONS, resolveOptions, type DetectionConfig, type DetectionOptions } from './config.js';
export { DetectionConfigError, DetectionInputError } from './errors.js';
export { shapiroWilk, type ShapiroWilkResult } from './shapiro-wilk.js';
export { normalCdf, normalQuantile, normalUpperTail } from './normal.js';
export { calibrateHoda, hardnessFromLabels, hardnessHistogram, pearsonDistance, type HodaCalibration, type HodaThreshold } from './hoda.js';
export type { PolicyStep } from './policy.js';
