/** `model-stealing-defense/detection`: the per-client detectors and their policy, pure and serialisable; loads neither TensorFlow.js nor Express. */
export { createClientDetection, createCohortDetection, type ClientDetectionWithConfig } from '../detection/client-detection.js';
export { DEFAULT_OPTIONS as DETECTION_DEFAULTS, type DetectionConfig, type DetectionOptions } from '../detection/config.js';
export { calibrateHoda, type HodaCalibration } from '../detection/hoda.js';
export { calibratePopulation, POPULATION_DEFAULTS, type PopulationCalibration, type PopulationOptions } from '../detection/above/population.js';
export { FINGERPRINT_DEFAULTS, type FingerprintOptions } from '../detection/above/fingerprint.js';
export type { Assessment, ClientAction, ClientDetection, ClientObservation, ClientState, DetectorVerdict } from '../detection/types.js';
export type { PolicyStep } from '../detection/policy.js';
export { DetectionConfigError, DetectionInputError } from '../detection/errors.js';
