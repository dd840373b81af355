/** Requests the gate refuses before (or instead of) their answer. */
import type { Assessment } from '../../../detection/types.js';
import { ServingError } from '../../errors.js';

/** A request refused before (or instead of) its answer: status, message and headers (Retry-After). */
export class ClientRefusal extends ServingError {
  override name = 'ClientRefusal';
  constructor(
    message: string,
    status: number,
    outcome: 'client_refused' | 'client_throttled' | 'unidentified' | 'store_unavailable',
    override readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message, status, outcome, headers);
  }
}

/** The refusal (403) or throttle (429 + Retry-After) an assessment calls for; undefined: the request goes on. */
export function refusalFor(assessment: Assessment): ClientRefusal | undefined {
  if (assessment.action === 'refuse') return new ClientRefusal('this client is refused: its queries look like model extraction', 403, 'client_refused');
  if (assessment.action === 'throttle') {
    const seconds = Math.max(1, Math.ceil(assessment.retryAfterSeconds ?? 60));
    return new ClientRefusal(`this client is throttled; retry after ${seconds} s`, 429, 'client_throttled', { 'retry-after': String(seconds) });
  }
  return undefined;
}
