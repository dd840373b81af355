/**
 * The serving side of population detection (src/detection/population.ts holds the math): two views of
 * the recent traffic, `all` (every identified client) and `young` (clients with fewer than
 * youngQueries queries before the request), each a window of additive counts in time buckets, judged
 * after every observation, with an alarm that has hysteresis.
 *
 * Memory: the counts are this process's. Redis: each process adds its counts to per-bucket hashes
 * (`<prefix>~pop:<view>:<bucket start>`, HINCRBY in one script call per key, expiring one bucket after it leaves the window)
 * every flushMs and reads every live bucket back, so each replica judges the traffic of all of them
 * (its own not yet flushed counts added). Keys: 2 views × (buckets in the window + 1), whatever the
 * traffic. A Redis failure is counted and logged by the caller; the view goes on with what this
 * process knows (its own counts), and the unsent counts are kept for the next flush (bounded by the
 * window: older buckets are dropped).
 */
import type { Redis } from 'ioredis';
import {
  countsLength,
  initialAlarmState,
  populationLevels,
  populationVerdicts,
  stepAlarm,
  type AlarmState,
  type PopulationConfig,
  type PopulationLayout,
} from '../../../detection/population.js';
import type { DetectorVerdict } from '../../../detection/types.js';

export const VIEWS = ['all', 'young'] as const;
const NO_CHANGES: AlarmChange[] = [];
export type PopulationView = (typeof VIEWS)[number];

/** Counts per time bucket with running totals; buckets leave the window by the time passed in. */
export class CountsWindow {
  private readonly buckets = new Map<number, Float64Array>();
  private totals: Float64Array;
  /** The earliest bucket's start: nothing to expire before it leaves (checked on every request). */
  private oldest = Infinity;

  constructor(
    private readonly lengthMs: number,
    private readonly bucketMs: number,
    private readonly size: number,
  ) {
    this.totals = new Float64Array(size);
  }

  bucketOf(time: number): number {
    return Math.floor(time / this.bucketMs) * this.bucketMs;
  }

  /** Drops the buckets that left the window at `time` (a bucket counts while its start is within lengthMs). */
  expire(time: number): void {
    if (this.oldest > time - this.lengthMs) return;
    let oldest = Infinity;
    for (const [start, counts] of this.buckets) {
      if (start > time - this.lengthMs) {
        oldest = Math.min(oldest, start);
        continue;
      }
      for (let i = 0; i < this.size; i++) this.totals[i] -= counts[i];
      this.buckets.delete(start);
    }
    this.oldest = oldest;
  }

  add(delta: ArrayLike<number>, time: number): void {
    this.expire(time);
    const start = this.bucketOf(time);
    let bucket = this.buckets.get(start);
    if (!bucket) {
      this.buckets.set(start, (bucket = new Float64Array(this.size)));
      this.oldest = Math.min(this.oldest, start);
    }
    for (let i = 0; i < this.size; i++) {
      bucket[i] += delta[i];
      this.totals[i] += delta[i];
    }
  }

  /** Replaces every bucket (a fresh read of the shared counts). */
  replace(buckets: Map<number, Float64Array>, time: number): void {
    this.buckets.clear();
    this.totals = new Float64Array(this.size);
    this.oldest = Infinity;
    for (const [start, counts] of buckets) {
      const copy = Float64Array.from(counts);
      this.buckets.set(start, copy);
      this.oldest = Math.min(this.oldest, start);
      for (let i = 0; i < this.size; i++) this.totals[i] += copy[i];
    }
    this.expire(time);
  }

  /** The window's sums at `time`. */
  sum(time: number): Float64Array {
    this.expire(time);
    return this.totals;
  }

  /** Starts of the buckets that can still be in the window at `time`. */
  liveStarts(time: number): number[] {
    const out: number[] = [];
    for (let start = this.bucketOf(time); start > time - this.lengthMs; start -= this.bucketMs) out.push(start);
    return out;
  }

  entries(): IterableIterator<[number, Float64Array]> {
    return this.buckets.entries();
  }
}

export interface ViewStatus {
  readonly alarm: boolean;
  /** When the alarm started (ms since the epoch), when on. */
  readonly since?: number;
  readonly queries: number;
  readonly verdicts: readonly DetectorVerdict[];
}

export interface AlarmChange {
  readonly view: PopulationView;
  readonly started: boolean;
  readonly status: ViewStatus;
  /** For an end: how long the alarm held. */
  readonly durationMs?: number;
}

export interface PopulationTracker {
  readonly config: PopulationConfig;
  /** Adds one request's counts (src/detection/population.ts `summarise`) to `all` and, for a young client, to `young`. */
  observe(delta: Float64Array, young: boolean, time: number): void;
  /** The layout the counts use (set by the first observation: K classes and HODA's bins). */
  layoutFor(classes: number): PopulationLayout;
  /** Judges both views at `time`; returns the alarms that started or ended. */
  judge(time: number): AlarmChange[];
  alarm(view: PopulationView): boolean;
  /** Each view as of the last judgement. */
  status(): Record<PopulationView, ViewStatus>;
  /** Sends this process's counts and reads the shared ones (Redis); no-op in memory. */
  flush(time: number): Promise<void>;
  close(): Promise<void>;
}

export interface PopulationSync {
  redis: Redis;
  prefix: string;
  flushMs: number;
  /** A Redis error (counted and logged by the gate as a store error). */
  onError(error: unknown): void;
  /** A successful exchange after errors. */
  onSuccess(): void;
  now: () => number;
}

const ADD = `
for i = 1, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
return 1
`;

type PopulationRedis = Redis & { msdPopulationAdd(key: string, ...args: (string | number)[]): Promise<number> };

export function createPopulationTracker(config: PopulationConfig, sync?: PopulationSync): PopulationTracker {
  const { lengthMs, bucketMs } = config.window;
  let layout: PopulationLayout | undefined;
  let size = 0;
  const windows = new Map<PopulationView, CountsWindow>();
  // Redis: counts not yet sent, per view and bucket.
  let pending = new Map<string, { view: PopulationView; start: number; counts: Float64Array }>();
  const alarms: Record<PopulationView, AlarmState> = { all: initialAlarmState(), young: initialAlarmState() };
  // The time of the last judgement: status() shows the views as of then.
  let lastJudged = 0;

  const layoutFor = (classes: number): PopulationLayout => {
    if (!layout || layout.classes !== classes) {
      // A model with another number of classes: counts of the old shape cannot be added to.
      layout = { classes, bins: config.hoda.enabled ? config.hoda.bins : 0 };
      size = countsLength(layout);
      for (const view of VIEWS) windows.set(view, new CountsWindow(lengthMs, bucketMs, size));
      pending = new Map();
    }
    return layout;
  };

  const keyOf = (view: PopulationView, start: number) => `${sync?.prefix ?? ''}~pop:${view}:${start}`;

  const observe = (delta: Float64Array, young: boolean, time: number): void => {
    if (!layout || delta.length !== size) return;
    for (const view of VIEWS) {
      if (view === 'young' && !young) continue;
      const window = windows.get(view)!;
      window.add(delta, time);
      if (!sync) continue;
      const start = window.bucketOf(time);
      const key = `${view}:${start}`;
      let entry = pending.get(key);
      if (!entry) pending.set(key, (entry = { view, start, counts: new Float64Array(size) }));
      for (let i = 0; i < size; i++) entry.counts[i] += delta[i];
    }
  };

  /** A view as of now (verdicts built: for logs and listings, not per request). */
  const statusOf = (view: PopulationView, time: number): ViewStatus => {
    if (!layout) return { alarm: false, queries: 0, verdicts: [] };
    const totals = windows.get(view)!.sum(time);
    const state = alarms[view];
    return { alarm: state.on, ...(state.on ? { since: state.since } : {}), queries: totals[0], verdicts: populationVerdicts(config, layout, totals).verdicts };
  };

  const judge = (time: number): AlarmChange[] => {
    if (!layout) return [];
    lastJudged = time;
    let changes: AlarmChange[] | undefined;
    for (const view of VIEWS) {
      const found = populationLevels(config, layout, windows.get(view)!.sum(time));
      const before = alarms[view];
      const stepped = stepAlarm(config.alarm, before, time, found.anyFlagged, found.maxLevel);
      alarms[view] = stepped.state;
      if (stepped.started) (changes ??= []).push({ view, started: true, status: statusOf(view, time) });
      if (stepped.ended) (changes ??= []).push({ view, started: false, status: statusOf(view, time), durationMs: time - before.since });
    }
    return changes ?? NO_CHANGES;
  };

  let flushing: Promise<void> | undefined;
  const flush = async (time: number): Promise<void> => {
    if (!sync || !layout) return;
    if (flushing) return flushing;
    const shape = layout;
    const sending = pending;
    pending = new Map();
    const redis = sync.redis as PopulationRedis;
    // The buckets whose counts Redis took: never sent again, even when another command of the exchange failed.
    const delivered = new Set<string>();
    flushing = (async () => {
      try {
        const pipeline = redis.pipeline() as unknown as {
          msdPopulationAdd(key: string, ...args: (string | number)[]): void;
          hgetall(key: string): void;
          exec(): Promise<[Error | null, unknown][] | null>;
        };
        const adds: string[] = [];
        for (const [key, { view, start, counts }] of sending) {
          // A bucket is read while its start is within the window: its key lives until then, plus one
          // bucket for replicas whose clocks run behind (a TTL from the last add would outlive it).
          const expiresInMs = start + lengthMs + bucketMs - time;
          if (expiresInMs <= bucketMs) continue;
          const args: (string | number)[] = [];
          for (let i = 0; i < counts.length; i++) if (counts[i] !== 0) args.push(i, counts[i]);
          if (!args.length) continue;
          pipeline.msdPopulationAdd(keyOf(view, start), ...args, expiresInMs);
          adds.push(key);
        }
        const reads: { view: PopulationView; start: number }[] = [];
        for (const view of VIEWS) for (const start of windows.get(view)!.liveStarts(time)) reads.push({ view, start }), pipeline.hgetall(keyOf(view, start));
        const results = (await pipeline.exec()) ?? [];
        adds.forEach((key, i) => {
          if (results[i] && !results[i][0]) delivered.add(key);
        });
        const failed = results.find(([error]) => error);
        if (failed) throw failed[0];
        if (layout !== shape) return;
        const replies = results.slice(results.length - reads.length);
        const fresh = new Map<PopulationView, Map<number, Float64Array>>(VIEWS.map((v) => [v, new Map()]));
        reads.forEach(({ view, start }, i) => {
          const fields = (replies[i]?.[1] ?? {}) as Record<string, string>;
          const counts = new Float64Array(size);
          let any = false;
          for (const [field, value] of Object.entries(fields)) {
            const at = Number(field);
            if (Number.isInteger(at) && at >= 0 && at < size) {
              counts[at] = Number(value) || 0;
              any = true;
            }
          }
          if (any) fresh.get(view)!.set(start, counts);
        });
        // What was observed while the exchange ran is not in Redis yet: add it back on top.
        for (const { view, start, counts } of pending.values()) {
          const buckets = fresh.get(view)!;
          const bucket = buckets.get(start) ?? new Float64Array(size);
          for (let i = 0; i < size; i++) bucket[i] += counts[i];
          buckets.set(start, bucket);
        }
        for (const view of VIEWS) windows.get(view)!.replace(fresh.get(view)!, sync.now());
        sync.onSuccess();
      } catch (error) {
        // Keep the unsent counts for the next flush (those still inside the window; not those Redis took).
        if (layout === shape) {
          for (const [key, entry] of sending) {
            if (delivered.has(key) || entry.start <= time - lengthMs) continue;
            const current = pending.get(key);
            if (current) for (let i = 0; i < size; i++) current.counts[i] += entry.counts[i];
            else pending.set(key, entry);
          }
        }
        sync.onError(error);
      } finally {
        flushing = undefined;
      }
    })();
    return flushing;
  };

  if (sync) {
    const redis = sync.redis as PopulationRedis;
    if (typeof redis.msdPopulationAdd !== 'function') redis.defineCommand('msdPopulationAdd', { numberOfKeys: 1, lua: ADD });
  }
  const timer = sync ? setInterval(() => void flush(sync.now()), sync.flushMs) : undefined;
  timer?.unref();

  return {
    config,
    observe,
    layoutFor,
    judge,
    alarm: (view) => alarms[view].on,
    status: () => ({ all: statusOf('all', lastJudged), young: statusOf('young', lastJudged) }),
    flush,
    close: async () => {
      if (timer) clearInterval(timer);
      if (sync) await flush(sync.now()).catch(() => {});
    },
  };
}
