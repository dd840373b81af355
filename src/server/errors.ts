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
  // A route the proxy does not serve (404), and a request refused while the proxy drains (503).
  | 'not_found'
  | 'draining'
  // Client detection (src/server/clients): refused, throttled, no identity, client store out.
  | 'client_refused'
  | 'client_throttled'
  | 'unidentified'
  | 'store_unavailable'
  // Batching: the surrogate's queue is full (503 with Retry-After).
  | 'overloaded';

export class ServingError extends Error {
  override name = 'ServingError';
  constructor(
    message: string,
    readonly status: number,
    readonly outcome: FailureOutcome,
    /** Headers the error answer carries, e.g. Retry-After on a 503. */
    readonly headers?: Readonly<Record<string, string>>,
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

/** The surrogate cannot keep up (its queue is full) or is shutting down: 503 with Retry-After, seconds. */
export class OverloadedError extends ServingError {
  override name = 'OverloadedError';
  constructor(message: string, retryAfterSeconds: number) {
    super(message, 503, 'overloaded', { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) });
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
