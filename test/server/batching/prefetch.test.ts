/**
 * The surrogate work of a proxied request starts before the upstream answers (batching/prefetch.ts):
 * the order of events with a held upstream, the cancellation of work nobody uses, and the fall back
 * to computing after the answer when the defense chosen then needs other context. No timing is
 * asserted: the upstream answers when the test says so, and forward passes end when the test opens them.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import request from 'supertest';
import type { ContextNeed, DefenseContext } from '../../../src/defenses/index.js';
import {
  batchedSurrogateContext,
  type AsyncProbabilityModel,
  type BatchedContextProvider,
  type ContextCallOptions,
} from '../../../src/server/batching/batched-context.js';
import { contextPrefetcher, PrefetchCancelled } from '../../../src/server/batching/prefetch.js';
import type { ContextProvider } from '../../../src/server/perturber.js';
import type { InputRows } from '../../../src/server/protocols/index.js';
import { startDefenseProxy } from '../../../src/server/proxy.js';
import { contextEchoDefense, kserveRequest } from '../helpers/fixtures.js';
import { waitFor, within } from '../../helpers/wait.js';

const CLASSES = 3;
const FEATURES = 4;
const PATH = '/v2/models/mnist/infer';

/**
 * A KServe upstream that holds every answer until the test releases it: `release(i, how)` answers
 * the i-th request (one probability row per input row), with an error status, or by cutting the connection.
 */
async function heldUpstream() {
  const held: { rows: number; answer(how: 'ok' | 'error' | 'reset'): void }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rows = JSON.parse(Buffer.concat(chunks).toString('utf8')).inputs[0].shape[0] as number;
      held.push({
        rows,
        answer: (how) => {
          if (how === 'reset') return void req.socket.destroy();
          const body =
            how === 'error'
              ? JSON.stringify({ error: 'model is loading' })
              : JSON.stringify({
                  model_name: 'mnist',
                  outputs: [
                    {
                      name: 'probabilities',
                      shape: [rows, CLASSES],
                      datatype: 'FP32',
                      data: Array.from({ length: rows * CLASSES }, (_, i) => [0.6, 0.3, 0.1][i % CLASSES]),
                    },
                  ],
                });
          res.writeHead(how === 'error' ? 503 : 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        },
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A fake surrogate whose forward passes wait for the test: `open()` ends the oldest pass waiting,
 * `run()` lets every pass (now and later) go. Each pass is recorded: its rows' first input values.
 */
function gatedSurrogate() {
  const passes: number[][] = [];
  const waiting: (() => void)[] = [];
  let free = false;
  const model: AsyncProbabilityModel = {
    classes: CLASSES,
    inputShape: [FEATURES],
    async probsAsync(inputs, rows) {
      passes.push(Array.from({ length: rows }, (_, r) => inputs[r * FEATURES]));
      if (!free) await new Promise<void>((resolve) => waiting.push(resolve));
      return { rows, cols: CLASSES, data: new Float32Array(rows * CLASSES).fill(1 / CLASSES) };
    },
  };
  return {
    model,
    passes,
    waiting: () => waiting.length,
    open: () => waiting.shift()?.(),
    run: () => {
      free = true;
      for (const go of waiting.splice(0)) go();
    },
  };
}

/** A KServe request of `rows` rows whose every input value is `tag` (so a pass shows whose rows it computed). */
const taggedRequest = (rows: number, tag: number) => ({
  inputs: [{ name: 'image', shape: [rows, FEATURES], datatype: 'FP32', data: new Array(rows * FEATURES).fill(tag) }],
});
const taggedInputs = (rows: number, tag: number): InputRows => ({ rows, cols: FEATURES, data: new Float32Array(rows * FEATURES).fill(tag) });

describe('proxy, surrogate work started before the upstream answers', () => {
  const cleanups: (() => Promise<unknown> | undefined)[] = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('starts the surrogate work while the upstream computes, and uses it for the answer', async () => {
    const upstream = await heldUpstream();
    cleanups.push(upstream.close);
    const events: string[] = [];
    const calls: ContextNeed[][] = [];
    const provider: ContextProvider = (needs, inputs) => {
      calls.push([...needs]);
      events.push(`context for ${inputs.rows} rows`);
      return { surrogateProbs: { rows: inputs.rows, cols: CLASSES, data: new Float32Array(inputs.rows * CLASSES).fill(1 / CLASSES) } };
    };
    const defense = contextEchoDefense();
    const proxy = await startDefenseProxy({ upstream: upstream.url, defense, context: provider });
    cleanups.push(() => proxy.close());
    const answered = request(proxy.url)
      .post(PATH)
      .send(kserveRequest(2, FEATURES))
      .then((res) => res);
    await waitFor(() => upstream.held.length === 1, { what: 'the upstream to receive the request' });
    await waitFor(() => calls.length === 1, { what: 'the surrogate work to start while the upstream holds its answer' });
    events.push('upstream answers');
    upstream.held[0].answer('ok');
    const res = await within(answered, { what: 'the answer' });
    assert.equal(res.status, 200);
    assert.deepEqual(events, ['context for 2 rows', 'upstream answers'], 'the context was computed before the upstream answered');
    assert.deepEqual(calls, [['surrogate']], 'computed once, for the defense’s needs');
    assert.equal(defense.seen.length, 1);
    for (const v of res.body.outputs[0].data) assert.ok(Math.abs(v - 1 / CLASSES) < 1e-6);
  });

  it('a small request’s pass comes right after the pass in flight, before its upstream has answered', async () => {
    const upstream = await heldUpstream();
    cleanups.push(upstream.close);
    const fake = gatedSurrogate();
    const context = batchedSurrogateContext({ surrogate: fake.model }, { windowMs: 0, maxBatchRows: 2 });
    cleanups.push(() => context.close());
    const proxy = await startDefenseProxy({ upstream: upstream.url, defense: contextEchoDefense(), context });
    cleanups.push(() => proxy.close());
    // A large request's first chunk computing (tag 1), the rest of it waiting.
    const large = context(['surrogate'], taggedInputs(6, 1));
    await waitFor(() => fake.waiting() === 1, { what: 'the large request’s first pass' });
    const small = request(proxy.url)
      .post(PATH)
      .send(taggedRequest(1, 2))
      .then((res) => res);
    await waitFor(() => upstream.held.length === 1 && queued(context) === 4 + 1, {
      what: 'the small request’s row in the queue',
      detail: () => queued(context),
    });
    fake.open();
    await waitFor(() => fake.passes.length === 2, { what: 'the next pass' });
    assert.deepEqual(fake.passes, [[1, 1], [2]], 'the small request’s row went next, alone, while its upstream still held the answer');
    fake.open();
    upstream.held[0].answer('ok');
    assert.equal((await within(small, { what: 'the small request’s answer' })).status, 200);
    fake.run();
    await within(large, { what: 'the large request' });
    assert.deepEqual(fake.passes.slice(2), [
      [1, 1],
      [1, 1],
    ]);
  });

  for (const how of ['reset', 'error'] as const) {
    it(`cancels the work started early when the upstream ${how === 'reset' ? 'fails' : 'answers an error'}: its rows leave the queue and are never computed`, async () => {
      const upstream = await heldUpstream();
      cleanups.push(upstream.close);
      const fake = gatedSurrogate();
      const context = batchedSurrogateContext({ surrogate: fake.model }, { windowMs: 0, maxBatchRows: 2 });
      cleanups.push(() => context.close());
      const proxy = await startDefenseProxy({ upstream: upstream.url, defense: contextEchoDefense(), context });
      cleanups.push(() => proxy.close());
      const computing = context(['surrogate'], taggedInputs(2, 1));
      await waitFor(() => fake.waiting() === 1, { what: 'a pass to be computing' });
      const failed = request(proxy.url)
        .post(PATH)
        .send(taggedRequest(2, 2))
        .then((res) => res);
      await waitFor(() => upstream.held.length === 1 && queued(context) === 2, { what: 'the request’s rows in the queue', detail: () => queued(context) });
      upstream.held[0].answer(how);
      const res = await within(failed, { what: 'the proxy’s answer' });
      assert.equal(res.status, how === 'reset' ? 502 : 503);
      await waitFor(() => queued(context) === 0, { what: 'the cancelled rows to leave the queue', detail: () => queued(context) });
      fake.run();
      await within(computing, { what: 'the pass in flight' });
      assert.deepEqual(fake.passes, [[1, 1]], 'the cancelled request’s rows were never computed');
    });
  }
});

/** Rows waiting in the batched context's queue: the largest request it would still admit, subtracted from its limit. */
function queued(context: BatchedContextProvider): number {
  const limit = context.batching.maxQueueRows;
  let lo = 0;
  let hi = limit;
  // admit(rows) throws once queued + rows > limit: the largest admitted rows is limit − queued.
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    try {
      context.admit(mid);
      lo = mid;
    } catch {
      hi = mid - 1;
    }
  }
  return limit - lo;
}

describe('contextPrefetcher', () => {
  /** A provider that records each call (its needs and signal) and answers what `answer` says. */
  function recording(answer: (needs: readonly ContextNeed[]) => Promise<DefenseContext> = async () => ({})) {
    const calls: { needs: ContextNeed[]; signal?: AbortSignal }[] = [];
    const holds: Promise<unknown>[] = [];
    const provider = Object.assign(
      (needs: readonly ContextNeed[], _inputs: InputRows, options?: ContextCallOptions) => {
        calls.push({ needs: [...needs], signal: options?.signal });
        return answer(needs);
      },
      { maxRowsPerRequest: 7, hold: (until: Promise<unknown>) => void holds.push(until) },
    );
    return { provider, calls, holds };
  }
  const inputs = (): InputRows => taggedInputs(1, 0);
  const tick = () => new Promise((resolve) => process.nextTick(resolve));

  it('starts on the next tick and hands the work to the perturber’s call for the same inputs', async () => {
    const { provider, calls } = recording(async () => ({ inputKeys: ['k'] }));
    const prefetcher = contextPrefetcher(provider);
    assert.equal(prefetcher.context.maxRowsPerRequest, 7, 'the provider’s limits go with it');
    const rows = inputs();
    const release = prefetcher.start(['surrogate'], rows);
    assert.equal(calls.length, 0, 'not in this tick: the upstream request goes out first');
    await tick();
    assert.equal(calls.length, 1);
    assert.deepEqual(await prefetcher.context(['surrogate'], rows), { inputKeys: ['k'] });
    assert.equal(calls.length, 1, 'not computed twice');
    assert.equal(prefetcher.pending, 0);
    release();
    assert.equal(calls[0].signal!.aborted, false, 'work taken is not cancelled');
    // Other inputs (another request) are computed as usual.
    await prefetcher.context(['surrogate'], inputs());
    assert.equal(calls.length, 2);
  });

  it('cancels work nobody took, and its failure is no unhandled rejection', async () => {
    const { provider, calls } = recording(() => Promise.reject(new Error('surrogate out of memory')));
    const prefetcher = contextPrefetcher(provider);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const release = prefetcher.start(['surrogate'], inputs());
      await tick();
      release();
      assert.ok(calls[0].signal!.aborted);
      assert.ok(calls[0].signal!.reason instanceof PrefetchCancelled);
      assert.equal(prefetcher.pending, 0);
      // Released before it started: never started.
      prefetcher.start(['surrogate'], inputs())();
      await tick();
      assert.equal(calls.length, 1);
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    // Taken, its failure reaches the taker.
    const rows = inputs();
    prefetcher.start(['surrogate'], rows);
    await assert.rejects(Promise.resolve(prefetcher.context(['surrogate'], rows)), /out of memory/);
  });

  it('a defense chosen after the answer with other needs gets its own context; the early work is cancelled', async () => {
    const { provider, calls } = recording(async (needs) => (needs.includes('surrogateGram') ? { gram: new Float64Array(1) } : {}));
    const prefetcher = contextPrefetcher(provider);
    const rows = inputs();
    prefetcher.start(['surrogate'], rows);
    await tick();
    const context = await prefetcher.context(['surrogateGram'], rows);
    assert.ok(context.gram);
    assert.deepEqual(
      calls.map((c) => c.needs),
      [['surrogate'], ['surrogateGram']],
    );
    assert.ok(calls[0].signal!.aborted, 'the work for the default defense was cancelled');
    // Needs the early work covers are served by it.
    const again = inputs();
    prefetcher.start(['surrogate', 'inputKey'], again);
    await tick();
    await prefetcher.context(['inputKey'], again);
    assert.equal(calls.length, 3);
  });

  it('work done before the answer holds the provider’s next pass until it is taken or released', async () => {
    const { provider, holds } = recording(async () => ({}));
    const prefetcher = contextPrefetcher(provider);
    const rows = inputs();
    const release = prefetcher.start(['surrogate'], rows);
    await waitFor(() => holds.length === 1, { what: 'the hold' });
    let settled = false;
    void holds[0].then(() => (settled = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(settled, false, 'held while the answer is awaited');
    await prefetcher.context(['surrogate'], rows);
    await tick();
    assert.equal(settled, true, 'released once taken');
    release();
    // Released without being taken: the hold settles too.
    const other = inputs();
    const drop = prefetcher.start(['surrogate'], other);
    await waitFor(() => holds.length === 2, { what: 'the second hold' });
    drop();
    await within(holds[1], { what: 'the second hold to settle' });
  });
});
