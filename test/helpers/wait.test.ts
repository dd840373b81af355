import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitFor, WaitTimeoutError, within } from './wait.js';

describe('waitFor and within', () => {
  it('waitFor resolves with the first truthy value, sync or async', async () => {
    let checks = 0;
    assert.equal(await waitFor(() => ++checks >= 3 && 'ready', { what: 'three checks', timeoutMs: 1000, intervalMs: 1 }), 'ready');
    assert.equal(checks, 3);
    assert.equal(await waitFor(async () => 7, { what: 'an async check', timeoutMs: 1000 }), 7);
  });

  it('waitFor fails at its deadline with an error naming what it waited for, and the detail', async () => {
    const started = performance.now();
    await assert.rejects(
      waitFor(() => false, { what: 'the upstream to receive the request', timeoutMs: 50, detail: () => ({ seen: 0 }) }),
      (error: unknown) =>
        error instanceof WaitTimeoutError && /timed out after 50 ms waiting for the upstream to receive the request; \{"seen":0\}/.test(error.message),
    );
    assert.ok(performance.now() - started >= 45);
  });

  it('waitFor fails at its deadline even while a check hangs', async () => {
    await assert.rejects(
      waitFor(() => new Promise<boolean>(() => {}), { what: 'a check that never answers', timeoutMs: 30 }),
      WaitTimeoutError,
    );
  });

  it('an error thrown by the check fails the wait at once', async () => {
    let checks = 0;
    await assert.rejects(
      waitFor(
        () => {
          checks++;
          throw new Error('the check failed');
        },
        { what: 'nothing', timeoutMs: 10_000 },
      ),
      /the check failed/,
    );
    assert.equal(checks, 1);
  });

  it('within gives the promise’s value, or fails at the deadline naming what it waited for', async () => {
    assert.equal(await within(Promise.resolve(5), { what: 'five' }), 5);
    await assert.rejects(within(Promise.reject(new Error('boom')), { what: 'a failure' }), /boom/);
    await assert.rejects(within(new Promise(() => {}), { what: 'the child to exit', timeoutMs: 20 }), /timed out after 20 ms waiting for the child to exit/);
  });

  it('keeps real time while a test fakes the clock', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let ready = false;
    setImmediate(() => (ready = true));
    assert.equal(await waitFor(() => ready, { what: 'an immediate', timeoutMs: 1000 }), true);
    await assert.rejects(within(new Promise(() => {}), { what: 'nothing', timeoutMs: 20 }), WaitTimeoutError);
  });

  it('refuses a deadline that is not a positive number', async () => {
    await assert.rejects(
      waitFor(() => true, { what: 'x', timeoutMs: 0 }),
      /timeoutMs must be a positive number/,
    );
  });
});
