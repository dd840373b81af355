/**
 * A request's surrogate work started before the model's answer. The defense context depends only on
 * the request's inputs, which the proxy has read before it forwards the request: computing it while
 * the upstream computes saves the upstream's round trip, and (batched) puts the request's rows in the
 * surrogate's queue at once, so that a small request takes the next turn behind a large one instead
 * of entering the queue after its upstream answer, when the large one's next chunk has started.
 *
 *   const prefetcher = contextPrefetcher(provider);
 *   const perturber = createPerturber({ ..., context: prefetcher.context });
 *   // per request, once its inputs are read and it has been sent upstream:
 *   const release = prefetcher.start(defense.needs, inputs);
 *   try { ...perturber.perturb(defense, () => inputs, answer) } finally { release(); }
 *
 * The perturber asks `prefetcher.context` for the very `inputs` object: it gets the work started
 * early when that covers the needs asked; otherwise (client detection chose a defense with other
 * needs after the answer) the early work is cancelled and the context computed for the needs asked.
 * `release()` cancels work that nobody took (the upstream failed, answered an error, the client left):
 * with a batched provider its rows still waiting leave the queue. Memory: one pending context per
 * request in flight, dropped at release.
 *
 * Work done before the upstream has answered holds the provider's next forward pass (provider.hold,
 * see Batcher.hold) until it is taken or released: with a surrogate computing in this thread, the
 * upstream's answer is then read before the next chunk of a large request blocks the event loop.
 */
import type { ContextNeed, DefenseContext } from '../../defenses/types.js';
import type { ContextProvider } from '../perturber.js';
import type { InputRows } from '../protocols/index.js';
import type { ContextCallOptions } from './batched-context.js';

/** Why early work was cancelled: the reason its promise rejects with (nobody awaits it). */
export class PrefetchCancelled extends Error {
  constructor(why: string) {
    super(`surrogate work started early was cancelled: ${why}`);
    this.name = 'PrefetchCancelled';
  }
}

export interface ContextPrefetcher {
  /** The provider for the perturber: the early work for these very inputs when it covers `needs`, else the provider's own. */
  readonly context: ContextProvider;
  /**
   * Starts computing the context for `needs` from `inputs`, on the next tick (after an upstream
   * request written in this one has gone out: a provider computing in this thread does not delay
   * it). Returns `release`, to call once the request is answered or failed: work not taken by then
   * is cancelled.
   */
  start(needs: readonly ContextNeed[], inputs: InputRows): () => void;
  /** Early work not yet taken nor released (for tests). */
  readonly pending: number;
}

interface Early {
  needs: ReadonlySet<ContextNeed>;
  controller: AbortController;
  promise?: Promise<DefenseContext>;
  /** Settles the provider's hold, once the work is taken or released. */
  unhold?(): void;
}

type CancellableProvider = (needs: readonly ContextNeed[], inputs: InputRows, options?: ContextCallOptions) => DefenseContext | Promise<DefenseContext>;
type Holding = { hold?(until: Promise<unknown>): void };

export function contextPrefetcher(provider: ContextProvider): ContextPrefetcher {
  // Keyed by the request's own InputRows object: nothing else can find it, and it goes with the request.
  const early = new WeakMap<InputRows, Early>();
  let pending = 0;
  const call = provider as CancellableProvider;
  const hold = (provider as Holding).hold?.bind(provider);

  const launch = (work: Early, inputs: InputRows): Promise<DefenseContext> => {
    let promise: Promise<DefenseContext>;
    try {
      promise = Promise.resolve(call([...work.needs], inputs, { signal: work.controller.signal }));
    } catch (error) {
      promise = Promise.reject(error);
    }
    // Whoever takes the work sees its failure; work nobody takes must not be an unhandled rejection.
    promise.then(
      () => {
        // Done before the answer came: the next forward pass lets the answer be read first.
        if (hold && early.get(inputs) === work) hold(new Promise<void>((resolve) => (work.unhold = resolve)));
      },
      () => {},
    );
    work.promise = promise;
    return promise;
  };

  const take = (inputs: InputRows): Early | undefined => {
    const work = early.get(inputs);
    if (work) {
      early.delete(inputs);
      pending--;
      work.unhold?.();
    }
    return work;
  };

  const context: ContextProvider = Object.assign(
    (needs: readonly ContextNeed[], inputs: InputRows): DefenseContext | Promise<DefenseContext> => {
      const work = take(inputs);
      if (work) {
        if (needs.every((need) => work.needs.has(need))) return work.promise ?? launch(work, inputs);
        work.controller.abort(new PrefetchCancelled('the defense chosen after the answer needs other context'));
      }
      return provider(needs, inputs);
    },
    {
      maxRowsPerRequest: provider.maxRowsPerRequest,
      admit: provider.admit?.bind(provider),
      useMetrics: provider.useMetrics?.bind(provider),
      failure: provider.failure?.bind(provider),
      close: provider.close?.bind(provider),
    },
  );

  const start = (needs: readonly ContextNeed[], inputs: InputRows): (() => void) => {
    take(inputs)?.controller.abort(new PrefetchCancelled('started again for the same inputs'));
    const work: Early = { needs: new Set(needs), controller: new AbortController() };
    early.set(inputs, work);
    pending++;
    process.nextTick(() => {
      if (early.get(inputs) === work && !work.promise) launch(work, inputs);
    });
    return () => {
      if (early.get(inputs) !== work) return;
      take(inputs);
      work.controller.abort(new PrefetchCancelled('the request ended without using it'));
    };
  };

  return {
    context,
    start,
    get pending() {
      return pending;
    },
  };
}
