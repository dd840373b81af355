/**
 * A counting semaphore, first come first served: at most `max` tasks run at once, the others wait in
 * order. `forEachLimited` runs a list of tasks through it with a few workers per list, so the lists
 * of concurrent requests take turns instead of one request's thousand images going first.
 */
export interface Limiter {
  /** Runs `task` once a slot is free; the slot is given back when it settles. */
  run<T>(task: () => Promise<T>): Promise<T>;
  /** Tasks running now. */
  readonly active: number;
}

export function createLimiter(max: number): Limiter {
  if (!Number.isInteger(max) || max < 1) throw new RangeError(`a limiter needs at least one slot, got ${max}`);
  let active = 0;
  const waiting: (() => void)[] = [];
  let head = 0;
  const acquire = (): Promise<void> | undefined => {
    if (active < max) {
      active += 1;
      return undefined;
    }
    return new Promise<void>((resolve) => waiting.push(resolve));
  };
  const release = (): void => {
    if (head < waiting.length) {
      // The slot passes to the next in line: `active` stays the same.
      const next = waiting[head];
      head += 1;
      if (head > 1024 && head * 2 > waiting.length) {
        waiting.splice(0, head);
        head = 0;
      }
      next();
    } else {
      active -= 1;
    }
  };
  return {
    async run<T>(task: () => Promise<T>): Promise<T> {
      const wait = acquire();
      if (wait) await wait;
      try {
        return await task();
      } finally {
        release();
      }
    },
    get active() {
      return active;
    },
  };
}

/**
 * Runs task(0) … task(count − 1) through the limiter, at most `workers` of this list waiting or
 * running at once. The first failure stops the list (tasks not yet started never start) and is
 * thrown once the running ones have settled.
 */
export async function forEachLimited(count: number, limiter: Limiter, workers: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (!failure && next < count) {
      const index = next;
      next += 1;
      await limiter.run(async () => {
        // A failure while this task waited for its slot: give the slot back at once.
        if (failure) return;
        try {
          await task(index);
        } catch (error) {
          failure ??= { error };
        }
      });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(workers, count)) }, worker));
  if (failure) throw failure.error;
}
