import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createBatcher, type BatchForward } from '../../../src/server/batching/batcher.js';
import { resolveBatching } from '../../../src/server/batching/options.js';
import { OverloadedError, RequestFormatError, ServingOptionError } from '../../../src/server/errors.js';
import { within } from '../../helpers/wait.js';

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
          assert.ok(
            batches.every((rows) => rows >= 1 && rows <= maxBatchRows),
            `batches ${batches} within ${maxBatchRows}`,
          );
          assert.equal(
            batches.reduce((a, b) => a + b, 0),
            requests.reduce((a, r) => a + r.rows, 0),
          );
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
    assert.deepEqual(
      answers.map((a) => a.length / 2),
      [1, 2, 3, 1, 1],
    );
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

/** Rows tagged with their request: every value of a row of request `tag` is `tag`. */
const tagged = (tag: number, rows: number) => new Float32Array(rows * WIDTH).fill(tag);

/**
 * A fake forward pass that records, for each pass, the request tag of each row, and waits at a gate
 * the test opens (`open()` lets the pass in flight end). `blockMs`: the pass first computes that long
 * synchronously, as a surrogate in this thread does (the batcher then sees a pass that blocks).
 */
function gatedForward(options: { blockMs?: number } = {}) {
  const passes: number[][] = [];
  const gates: (() => void)[] = [];
  const started: (() => void)[] = [];
  const forward: BatchForward<Float32Array> = (inputs, rows) => {
    passes.push(Array.from({ length: rows }, (_, r) => inputs[r * WIDTH]));
    for (const notify of started.splice(0)) notify();
    if (options.blockMs) {
      const until = performance.now() + options.blockMs;
      while (performance.now() < until) {
        // computing in this thread
      }
      return Promise.resolve(rowFunction(inputs, rows));
    }
    return new Promise((resolve) => gates.push(() => resolve(rowFunction(inputs, rows))));
  };
  return {
    forward,
    passes,
    /** Tags of the requests in each pass, in order, one entry per request ("1,1,1,1" → "1"). */
    order: () => passes.map((rows) => [...new Set(rows)].join('+')),
    /** Resolves when the next pass starts. */
    nextPass: () => new Promise<void>((resolve) => started.push(resolve)),
    /** Ends the pass in flight. */
    open: () => gates.shift()?.(),
  };
}

/** A turn of the event loop (pending I/O, then immediates). */
const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('batcher, turns between requests', () => {
  it('a small request submitted during a large one’s pass is served in the very next pass, alone', async () => {
    const fake = gatedForward();
    const batcher = createBatcher(fake.forward, { windowMs: 0, maxBatchRows: 4, maxQueueRows: 1000, width: WIDTH });
    const first = fake.nextPass();
    const large = batcher.submit(tagged(1, 16), 16);
    await within(first, { what: 'the large request’s first pass' });
    const small = batcher.submit(tagged(2, 1), 1);
    let smallDone = false;
    void small.then(() => (smallDone = true));
    for (let pass = 0; pass < 5 && !smallDone; pass++) {
      const next = fake.nextPass();
      fake.open();
      if (!smallDone) await within(Promise.race([next, small]), { what: `pass ${pass + 2}` });
    }
    await within(small, { what: 'the small request' });
    assert.deepEqual(fake.order(), ['1', '2'], 'the large request’s next chunk waited for the small one');
    assert.deepEqual(fake.passes[1], [2], 'the small request’s pass is not filled up with the large request’s rows');
    for (let pass = 0; pass < 4; pass++) {
      const next = fake.nextPass();
      fake.open();
      if (pass < 3) await within(next, { what: `the large request’s pass ${pass + 2}` });
    }
    assert.deepEqual(await within(large, { what: 'the large request' }), rowFunction(tagged(1, 16), 16));
    assert.deepEqual(fake.order(), ['1', '2', '1', '1', '1']);
    await batcher.close();
  });

  it('requests arriving during a pass, or just as it ends, go before the rest of the requests in it, and share a pass', async () => {
    const fake = gatedForward();
    const batcher = createBatcher(fake.forward, { windowMs: 0, maxBatchRows: 4, maxQueueRows: 1000, width: WIDTH });
    const first = fake.nextPass();
    const large = batcher.submit(tagged(1, 8), 8);
    const other = batcher.submit(tagged(3, 8), 8);
    await within(first, { what: 'the first pass' });
    assert.deepEqual(fake.order(), ['1']);
    const during = batcher.submit(tagged(2, 1), 1);
    // Arriving as the pass ends: on the turn of the loop where the pass's end is handled.
    const second = fake.nextPass();
    fake.open();
    const asItEnds = new Promise<Float32Array>((resolve, reject) => setImmediate(() => batcher.submit(tagged(4, 1), 1).then(resolve, reject)));
    await within(second, { what: 'the second pass' });
    // The request waiting before the pass came first (3), then those that arrived meanwhile (2, 4);
    // the large request's next chunk (1) comes after all of them.
    const rest = (async () => {
      for (let pass = 0; pass < 6; pass++) {
        const next = fake.nextPass();
        fake.open();
        await Promise.race([next, Promise.all([large, other, during, asItEnds])]);
      }
    })();
    await within(Promise.all([large, other, during, asItEnds, rest]), { what: 'every request' });
    assert.deepEqual(fake.order().slice(0, 4), ['1', '3', '2+4', '1']);
    await batcher.close();
  });

  it('a cancelled request leaves the queue at once; a pass it is in ends without it, and no more of its rows are computed', async () => {
    const fake = gatedForward();
    const batcher = createBatcher(fake.forward, { windowMs: 0, maxBatchRows: 4, maxQueueRows: 1000, width: WIDTH });
    const first = fake.nextPass();
    const computing = new AbortController();
    const inPass = batcher.submit(tagged(1, 12), 12, computing.signal);
    await within(first, { what: 'the first pass' });
    const waiting = new AbortController();
    const queued = batcher.submit(tagged(2, 6), 6, waiting.signal);
    const kept = batcher.submit(tagged(3, 2), 2);
    assert.equal(batcher.queuedRows, 8 + 6 + 2);
    waiting.abort(new Error('client gone'));
    await assert.rejects(queued, /client gone/);
    assert.equal(batcher.queuedRows, 8 + 2, 'the cancelled request’s rows left the queue');
    computing.abort(new Error('upstream failed'));
    await assert.rejects(inPass, /upstream failed/);
    assert.equal(batcher.queuedRows, 2);
    const second = fake.nextPass();
    fake.open();
    await within(second, { what: 'the next pass' });
    fake.open();
    assert.deepEqual(await within(kept, { what: 'the request kept' }), rowFunction(tagged(3, 2), 2));
    assert.deepEqual(fake.order(), ['1', '3'], 'no pass after the cancellation computed a cancelled row');
    assert.equal(batcher.queuedRows, 0);
    // Already aborted: refused without queueing.
    await assert.rejects(batcher.submit(tagged(4, 1), 1, AbortSignal.abort(new Error('too late'))), /too late/);
    assert.equal(batcher.queuedRows, 0);
    await batcher.close();
  });

  it('close refuses a request whose chunk is computing, once that pass ends', async () => {
    const fake = gatedForward();
    const batcher = createBatcher(fake.forward, { windowMs: 0, maxBatchRows: 4, maxQueueRows: 1000, width: WIDTH });
    const first = fake.nextPass();
    const large = batcher.submit(tagged(1, 8), 8);
    await within(first, { what: 'the first pass' });
    const closed = batcher.close();
    fake.open();
    await closed;
    await assert.rejects(large, (error: unknown) => error instanceof OverloadedError && error.status === 503);
    assert.equal(batcher.queuedRows, 0);
    assert.equal(fake.passes.length, 1);
  });

  it('when passes block this thread, a hold delays the next pass until it settles, or until a quarter of a pass has passed', async (t) => {
    // A fake clock for the hold's limit: it runs out when the test says, however slow the machine.
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const fake = gatedForward({ blockMs: 3 });
    const batcher = createBatcher(fake.forward, { windowMs: 0, maxBatchRows: 4, maxQueueRows: 1000, width: WIDTH });
    // A large request's first chunk, then a small request that arrived meanwhile; the small one's
    // holder (the proxy waiting for its upstream answer) has not settled.
    let answered!: () => void;
    const large = batcher.submit(tagged(1, 12), 12);
    await turn();
    assert.deepEqual(fake.order(), ['1']);
    const small = batcher.submit(tagged(2, 1), 1);
    await within(small, { what: 'the small request' });
    batcher.hold(new Promise<void>((resolve) => (answered = resolve)));
    for (let i = 0; i < 5; i++) await turn();
    assert.deepEqual(fake.order(), ['1', '2'], 'the large request waits while the hold lasts');
    answered();
    await within(large, { what: 'the large request, once the hold settled' });
    assert.deepEqual(fake.order(), ['1', '2', '1', '1']);

    // A hold that never settles delays the next pass once, for a quarter of a pass at most.
    const large2 = batcher.submit(tagged(3, 8), 8);
    await turn();
    const small2 = batcher.submit(tagged(4, 1), 1);
    await within(small2, { what: 'the second small request' });
    batcher.hold(new Promise(() => {}));
    for (let i = 0; i < 5; i++) await turn();
    assert.deepEqual(fake.order().slice(4), ['3', '4'], 'held');
    t.mock.timers.tick(1000);
    await within(large2, { what: 'the large request, once the hold ran out' });
    assert.deepEqual(fake.order().slice(4), ['3', '4', '3']);
    await batcher.close();
  });

  it('a hold does not delay passes that compute elsewhere (a worker thread)', async () => {
    const fake = gatedForward();
    const batcher = createBatcher(fake.forward, { windowMs: 0, maxBatchRows: 4, maxQueueRows: 1000, width: WIDTH });
    const first = fake.nextPass();
    const small = batcher.submit(tagged(1, 1), 1);
    await within(first, { what: 'the first pass' });
    const large = batcher.submit(tagged(2, 4), 4);
    const second = fake.nextPass();
    fake.open();
    await within(small, { what: 'the small request' });
    batcher.hold(new Promise(() => {}));
    await within(second, { what: 'the next pass, without waiting for the hold' });
    fake.open();
    await within(large, { what: 'the large request' });
    assert.deepEqual(fake.order(), ['1', '2']);
    await batcher.close();
  });
});
