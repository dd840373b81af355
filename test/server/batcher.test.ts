import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createBatcher, type BatchForward } from '../../src/server/batching/batcher.js';
import { resolveBatching } from '../../src/server/batching/options.js';
import { OverloadedError, RequestFormatError, ServingOptionError } from '../../src/server/errors.js';
import { within } from '../helpers/wait.js';

const WIDTH = 3;

/** A deterministic per-row function: two outputs per row, from the row's own values only. */
function rowFunction(inputs: Float32Array, rows: number): Float32Array {
  const out = new Float32Array(rows * 2);
  for (let r = 0; r < rows; r++) {
    const row = inputs.subarray(r * WIDTH, (r + 1) * WIDTH);
    out[r * 2] = row[0] + 2 * row[1] - row[2];
    out[r * 2 + 1] = row[0] * row[2];
  }
  return out;
}

/** A fake forward pass that records each batch's size and answers after `delayMs`; `onPass` sees each pass start. */
function fakeForward(delayMs = 0, onPass?: (passes: number) => void) {
  const batches: number[] = [];
  const forward: BatchForward<Float32Array> = async (inputs, rows) => {
    batches.push(rows);
    onPass?.(batches.length);
    if (delayMs) await sleep(delayMs);
    return rowFunction(inputs, rows);
  };
  return { forward, batches };
}

function inputsFor(rows: number, seed: number): Float32Array {
  return Float32Array.from({ length: rows * WIDTH }, (_, i) => ((i * 7 + seed * 13) % 17) - 8);
}

describe('batcher', () => {
  it('coalesced answers equal one-by-one answers, whatever the request sizes and arrival times', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ rows: fc.integer({ min: 1, max: 40 }), delayMs: fc.integer({ min: 0, max: 4 }) }), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 16 }),
        fc.integer({ min: 0, max: 3 }),
        async (requests, maxBatchRows, windowMs) => {
          const { forward, batches } = fakeForward(1);
          const batcher = createBatcher(forward, { windowMs, maxBatchRows, maxQueueRows: 10_000, width: WIDTH });
          const answers = requests.map(async ({ rows, delayMs }, i) => {
            await sleep(delayMs);
            const inputs = inputsFor(rows, i);
            return { expected: rowFunction(inputs, rows), got: await batcher.submit(inputs, rows) };
          });
          for (const { expected, got } of await Promise.all(answers)) assert.deepEqual(got, expected);
          assert.ok(batches.every((rows) => rows >= 1 && rows <= maxBatchRows), `batches ${batches} within ${maxBatchRows}`);
          assert.equal(batches.reduce((a, b) => a + b, 0), requests.reduce((a, r) => a + r.rows, 0));
          await batcher.close();
        },
      ),
      { numRuns: 40 },
    );
  });

  it('requests within the window share one forward pass', async () => {
    const { forward, batches } = fakeForward();
    const batcher = createBatcher(forward, { windowMs: 20, maxBatchRows: 32, maxQueueRows: 100, width: WIDTH });
    const answers = await Promise.all([1, 2, 3, 1, 1].map((rows, i) => batcher.submit(inputsFor(rows, i), rows)));
    assert.deepEqual(batches, [8]);
    assert.deepEqual(answers.map((a) => a.length / 2), [1, 2, 3, 1, 1]);
    await batcher.close();
  });

  it('a lone client goes at once, without waiting for the window', async () => {
    const { forward, batches } = fakeForward();
    const batcher = createBatcher(forward, { windowMs: 60_000, maxBatchRows: 32, maxQueueRows: 100, width: WIDTH });
    const waited = sleep(20_000, undefined, { ref: false }).then(() => assert.fail('a lone request waited for the one-minute window'));
    // One request at a time: no one to batch with.
    for (let i = 0; i < 3; i += 1) await Promise.race([batcher.submit(inputsFor(1, i), 1), waited]);
    assert.deepEqual(batches, [1, 1, 1]);
    await batcher.close();
  });

  it('once requests share a pass, later ones arriving apart wait for the window together', async (t) => {
    // A fake clock for the window's timer: it fires when the test says, however slow the machine.
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const { forward, batches } = fakeForward();
    const batcher = createBatcher(forward, { windowMs: 1500, maxBatchRows: 32, maxQueueRows: 100, width: WIDTH });
    await Promise.all([batcher.submit(inputsFor(1, 4), 1), batcher.submit(inputsFor(2, 5), 2)]);
    assert.deepEqual(batches, [3], 'the first two shared a pass');
    // The pass's bookkeeping settles in microtasks, all run before the next turn of the loop.
    await new Promise((resolve) => setImmediate(resolve));
    const first = batcher.submit(inputsFor(1, 6), 1);
    await new Promise((resolve) => setImmediate(resolve));
    t.mock.timers.tick(1000);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(batches, [3], 'the first waits for the window, whatever turns of the loop pass');
    const second = batcher.submit(inputsFor(3, 7), 3);
    t.mock.timers.tick(499);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(batches, [3], 'the window has 1 ms left');
    t.mock.timers.tick(1);
    await Promise.all([first, second]);
    assert.deepEqual(batches, [3, 4]);
    await batcher.close();
  });

  it('a full batch goes at once, without waiting for the window', async () => {
    const { forward, batches } = fakeForward();
    const batcher = createBatcher(forward, { windowMs: 1000, maxBatchRows: 4, maxQueueRows: 100, width: WIDTH });
    await batcher.submit(inputsFor(4, 1), 4);
    assert.deepEqual(batches, [4]);
    await batcher.close();
  });

  it('splits a large request, and a small one arriving meanwhile finishes before its last chunk', async () => {
    let firstPass!: () => void;
    const computing = new Promise<void>((resolve) => (firstPass = resolve));
    const { forward, batches } = fakeForward(2, (passes) => passes === 1 && firstPass());
    const batcher = createBatcher(forward, { windowMs: 0, maxBatchRows: 4, maxQueueRows: 1000, width: WIDTH });
    const order: string[] = [];
    const large = batcher.submit(inputsFor(40, 1), 40).then((out) => {
      order.push(`large after ${batches.length} passes`);
      return out;
    });
    await within(computing, { what: 'the large request’s first forward pass' }); // it is computing its first chunk
    assert.equal(batches.length, 1);
    const small = batcher.submit(inputsFor(1, 2), 1).then((out) => {
      order.push(`small after ${batches.length} passes`);
      return out;
    });
    const [largeOut, smallOut] = await Promise.all([large, small]);
    assert.deepEqual(largeOut, rowFunction(inputsFor(40, 1), 40));
    assert.deepEqual(smallOut, rowFunction(inputsFor(1, 2), 1));
    assert.match(order[0], /^small/);
    assert.ok(batches.every((rows) => rows <= 4));
    // The small row joined a pass within two passes of arriving, far before the large request's tenth.
    const smallPasses = Number(order[0].match(/after (\d+)/)![1]);
    assert.ok(smallPasses < batches.length, `small done after ${smallPasses} of ${batches.length} passes`);
    await batcher.close();
  });

  it('refuses with 503 and Retry-After when the queue is full, and admits again once it drains', async () => {
    const { forward } = fakeForward(5);
    const batcher = createBatcher(forward, { windowMs: 0, maxBatchRows: 2, maxQueueRows: 6, width: WIDTH });
    const first = batcher.submit(inputsFor(6, 1), 6);
    const refused = await batcher.submit(inputsFor(1, 2), 1).then(
      () => assert.fail('should be refused'),
      (error: unknown) => error,
    );
    assert.ok(refused instanceof OverloadedError);
    assert.equal(refused.status, 503);
    assert.match(refused.headers!['retry-after'], /^[1-9]\d*$/);
    assert.throws(() => batcher.admit(1), OverloadedError);
    await first;
    assert.equal(batcher.queuedRows, 0);
    batcher.admit(6);
    assert.equal((await batcher.submit(inputsFor(1, 3), 1)).length, 2);
    await batcher.close();
  });

  it('a failed forward pass rejects every request in it, and the others still get their answers', async () => {
    let calls = 0;
    const batcher = createBatcher(
      async (inputs, rows) => {
        calls++;
        if (calls === 1) throw new Error('surrogate exploded');
        return rowFunction(inputs, rows);
      },
      { windowMs: 5, maxBatchRows: 2, maxQueueRows: 100, width: WIDTH },
    );
    const a = batcher.submit(inputsFor(1, 1), 1);
    const b = batcher.submit(inputsFor(3, 2), 3); // one row in the failing pass, two after it
    const c = batcher.submit(inputsFor(1, 3), 1);
    await assert.rejects(a, /surrogate exploded/);
    await assert.rejects(b, /surrogate exploded/);
    assert.deepEqual(await c, rowFunction(inputsFor(1, 3), 1));
    await batcher.close();
  });

  it('checks the rows and the input width', async () => {
    const batcher = createBatcher(fakeForward().forward, { windowMs: 1, maxBatchRows: 2, maxQueueRows: 100, width: WIDTH });
    await assert.rejects(batcher.submit(new Float32Array(4), 1), RequestFormatError);
    await assert.rejects(batcher.submit(new Float32Array(0), 0), RequestFormatError);
    await batcher.close();
  });

  it('close rejects waiting requests with 503 and leaves no timer running', async () => {
    const timersBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length;
    const batcher = createBatcher(fakeForward().forward, { windowMs: 60_000, maxBatchRows: 32, maxQueueRows: 100, width: WIDTH });
    const waiting = batcher.submit(inputsFor(1, 1), 1);
    assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length, timersBefore + 1);
    await batcher.close();
    await assert.rejects(waiting, (error: unknown) => error instanceof OverloadedError && error.status === 503);
    assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length, timersBefore);
    await assert.rejects(batcher.submit(inputsFor(1, 1), 1), OverloadedError);
  });

  it('validates its options at construction, saying what to write', () => {
    assert.deepEqual(resolveBatching({}), { windowMs: 2, maxBatchRows: 32, maxQueueRows: 16_384, maxRowsPerRequest: 4096 });
    assert.throws(() => resolveBatching({ maxBatchRows: 0 }), ServingOptionError);
    assert.throws(() => resolveBatching({ windowMs: -1 }), /windowMs must be a number ≥ 0/);
    assert.throws(() => resolveBatching({ maxBatchRows: 2.5 }), /integer/);
    assert.throws(() => resolveBatching({ maxRowsPerRequest: 100, maxQueueRows: 10 }), /could never be queued/);
    assert.throws(() => resolveBatching({ window: 3 } as never), /unknown batching option\(s\) window/);
  });
});
