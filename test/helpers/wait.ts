/**
 * Waiting in tests, always with a deadline: poll a condition (`waitFor`) or await a promise
 * (`within`) for at most `timeoutMs`, then fail with an error that names what was awaited, instead
 * of hanging until the runner's own timeout or sleeping a fixed time and hoping.
 *
 * The timers are captured when this module loads, so a test that fakes the clock with node:test's
 * `mock.timers` can still wait for real events.
 */
import { performance } from 'node:perf_hooks';

const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;

export interface WaitOptions {
  /** What is awaited, in words, for the error: "the upstream to receive the slow request". */
  what: string;
  /** The deadline, from the call (default 10 000 ms). */
  timeoutMs?: number;
}

export interface WaitForOptions extends WaitOptions {
  /** Pause between two checks (default 5 ms); a check that is itself a request may want more. */
  intervalMs?: number;
  /** State worth seeing when the deadline passes (a log, a count): added to the error message. */
  detail?: () => unknown;
}

/** The error a wait throws at its deadline. */
export class WaitTimeoutError extends Error {
  constructor(what: string, timeoutMs: number, detail?: () => unknown) {
    let extra = '';
    if (detail) {
      try {
        const value = detail();
        extra = `; ${typeof value === 'string' ? value : JSON.stringify(value)}`;
      } catch (error) {
        extra = `; (detail failed: ${String(error)})`;
      }
    }
    super(`timed out after ${timeoutMs} ms waiting for ${what}${extra}`);
    this.name = 'WaitTimeoutError';
  }
}

/** A promise that rejects with WaitTimeoutError at the deadline, and a way to cancel it. */
function deadline(what: string, timeoutMs: number, detail?: () => unknown): { expired: Promise<never>; cancel(): void } {
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new TypeError(`waitFor: timeoutMs must be a positive number, got ${timeoutMs}`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = realSetTimeout(() => reject(new WaitTimeoutError(what, timeoutMs, detail)), timeoutMs);
  });
  // Handled here too, so a deadline passing between two checks is never an unhandled rejection.
  expired.catch(() => {});
  return { expired, cancel: () => realClearTimeout(timer) };
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => realSetTimeout(resolve, ms));

/**
 * Resolves with the first truthy value `condition` returns (it may be async: a request, a read),
 * checking at once and then every `intervalMs`; rejects with WaitTimeoutError once `timeoutMs` has
 * passed, even while a check is still pending. An error thrown by `condition` is not retried: it
 * rejects the wait at once (an assertion inside a check fails the test).
 *
 *   await waitFor(() => upstream.requests.length > 0, { what: 'the upstream to receive the request', timeoutMs: 5000 });
 */
export async function waitFor<T>(condition: () => T | Promise<T>, options: WaitForOptions): Promise<NonNullable<T>> {
  const { what, timeoutMs = 10_000, intervalMs = 5, detail } = options;
  const { expired, cancel } = deadline(what, timeoutMs, detail);
  const ends = performance.now() + timeoutMs;
  try {
    for (;;) {
      const value = await Promise.race([condition(), expired]);
      if (value) return value as NonNullable<T>;
      if (performance.now() >= ends) throw new WaitTimeoutError(what, timeoutMs, detail);
      await Promise.race([pause(intervalMs), expired]);
    }
  } finally {
    cancel();
  }
}

/**
 * `promise`, or WaitTimeoutError once `timeoutMs` has passed: for an event that has a promise of its
 * own (a child's exit, an answer, `once(emitter, 'close')`).
 *
 *   const code = await within(exited, { what: 'the proxy to exit after SIGTERM', timeoutMs: 20_000 });
 */
export async function within<T>(promise: Promise<T>, options: WaitOptions & { detail?: () => unknown }): Promise<T> {
  const { what, timeoutMs = 10_000, detail } = options;
  const { expired, cancel } = deadline(what, timeoutMs, detail);
  try {
    return await Promise.race([promise, expired]);
  } finally {
    cancel();
  }
}
