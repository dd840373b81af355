/** Errors of the detection layer. */

/** Options that do not describe a valid detection setup; the message says what to write instead. */
export class DetectionConfigError extends Error {
  override name = 'DetectionConfigError';
}

/** An observation or state that does not fit the contract (a programming error of the caller). */
export class DetectionInputError extends Error {
  override name = 'DetectionInputError';
}
