/**
 * Errors of the serving layer. Each carries the HTTP status the client gets and a bounded
 * outcome label for metrics, so the middleware and the proxy answer the same way.
 */

export type FailureOutcome =
  | 'bad_request'
  | 'bad_answer'
  | 'defense_failed'
  | 'too_large'
  | 'upstream_unavailable'
  | 'upstream_timeout'
  | 'not_served'
  // Client detection (src/server/clients): refused, throttled, no identity, client store out.
  | 'client_refused'
  | 'client_throttled'
  | 'unidentified'
  | 'store_unavailable';

export class ServingError extends Error {
  override name = 'ServingError';
  constructor(
    message: string,
    readonly status: number,
    readonly outcome: FailureOutcome,
  ) {
    super(message);
  }
}

/** The client's request cannot be read (malformed JSON, no inputs where the defense needs them): 400. */
export class RequestFormatError extends ServingError {
  override name = 'RequestFormatError';
  constructor(message: string, status = 400) {
    super(message, status, status === 413 ? 'too_large' : 'bad_request');
  }
}

/** The model's answer cannot be read by the codec, or is not what the defense accepts: 502 by default. */
export class AnswerFormatError extends ServingError {
  override name = 'AnswerFormatError';
  constructor(message: string, status = 502) {
    super(message, status, 'bad_answer');
  }
}

/** A bad option given when building the middleware or the proxy; says what to write instead. */
export class ServingOptionError extends Error {
  override name = 'ServingOptionError';
}
