/**
 * The serving side of population detection (src/detection/above/population.ts holds the math): two views of
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
} from '../../../detection/above/population.js';
import type { DetectorVerdict } from '../../../detection/types.js';
import { CountsWindow } from './counts-window.js';

export { CountsWindow } from './counts-window.js';

export const VIEWS = ['all', 'young'] as const;
const NO_CHANGES: AlarmChange[] = [];
export type PopulationView = (typeof VIEWS)[number];

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
  /** Adds one request's counts (src/detection/above/population.ts `summarise`) to `all` and, for a young client, to `young`. */
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

interface PopulationPipeline {
  msdPopulationAdd(key: string, ...args: (string | number)[]): void;
  hgetall(key: string): void;
  exec(): Promise<[Error | null, unknown][] | null>;
}

/** Counts not yet sent to Redis, per view and bucket (keyed `<view>:<bucket start>`). */
type PendingCounts = Map<string, { view: PopulationView; start: number; counts: Float64Array }>;

/** Queues the adds of the unsent counts still worth sending; returns their pending keys, in pipeline order. */
function queueAdds(
  pipeline: PopulationPipeline,
  sending: PendingCounts,
  time: number,
  { lengthMs, bucketMs }: PopulationConfig['window'],
  keyOf: (view: PopulationView, start: number) => string,
): string[] {
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
  return adds;
}

/** One bucket's counts from its hash (undefined: no field of this layout in it). */
function countsOf(fields: Record<string, string>, size: number): Float64Array | undefined {
  const counts = new Float64Array(size);
  let any = false;
  for (const [field, value] of Object.entries(fields)) {
    const at = Number(field);
    if (Number.isInteger(at) && at >= 0 && at < size) {
      counts[at] = Number(value) || 0;
      any = true;
    }
  }
  return any ? counts : undefined;
}

/** Adds the counts observed while the exchange ran (not in Redis yet) on top of what Redis answered. */
function addOnTop(fresh: Map<PopulationView, Map<number, Float64Array>>, pending: PendingCounts, size: number): void {
  for (const { view, start, counts } of pending.values()) {
    const buckets = fresh.get(view)!;
    const bucket = buckets.get(start) ?? new Float64Array(size);
    for (let i = 0; i < size; i++) bucket[i] += counts[i];
    buckets.set(start, bucket);
  }
}

/** The views' counts and alarms; with `sync`, the exchange of the counts with Redis. */
class Tracker {
  private layout: PopulationLayout | undefined;
  private size = 0;
  private readonly windows = new Map<PopulationView, CountsWindow>();
  // Redis: counts not yet sent, per view and bucket.
  private pending: PendingCounts = new Map();
  private readonly alarms: Record<PopulationView, AlarmState> = { all: initialAlarmState(), young: initialAlarmState() };
  // The time of the last judgement: status() shows the views as of then.
  private lastJudged = 0;
  private flushing: Promise<void> | undefined;

  constructor(
    readonly config: PopulationConfig,
    private readonly sync?: PopulationSync,
  ) {}

  layoutFor(classes: number): PopulationLayout {
    if (!this.layout || this.layout.classes !== classes) {
      // A model with another number of classes: counts of the old shape cannot be added to.
      this.layout = { classes, bins: this.config.hoda.enabled ? this.config.hoda.bins : 0 };
      this.size = countsLength(this.layout);
      for (const view of VIEWS) this.windows.set(view, new CountsWindow(this.config.window.lengthMs, this.config.window.bucketMs, this.size));
      this.pending = new Map();
    }
    return this.layout;
  }

  private keyOf(view: PopulationView, start: number): string {
    return `${this.sync?.prefix ?? ''}~pop:${view}:${start}`;
  }

  observe(delta: Float64Array, young: boolean, time: number): void {
    if (!this.layout || delta.length !== this.size) return;
    for (const view of VIEWS) {
      if (view === 'young' && !young) continue;
      const window = this.windows.get(view)!;
      window.add(delta, time);
      if (!this.sync) continue;
      const start = window.bucketOf(time);
      const key = `${view}:${start}`;
      let entry = this.pending.get(key);
      if (!entry) this.pending.set(key, (entry = { view, start, counts: new Float64Array(this.size) }));
      for (let i = 0; i < this.size; i++) entry.counts[i] += delta[i];
    }
  }

  alarm(view: PopulationView): boolean {
    return this.alarms[view].on;
  }

  /** A view as of now (verdicts built: for logs and listings, not per request). */
  statusOf(view: PopulationView, time: number): ViewStatus {
    if (!this.layout) return { alarm: false, queries: 0, verdicts: [] };
    const totals = this.windows.get(view)!.sum(time);
    const state = this.alarms[view];
    return {
      alarm: state.on,
      ...(state.on ? { since: state.since } : {}),
      queries: totals[0],
      verdicts: populationVerdicts(this.config, this.layout, totals).verdicts,
    };
  }

  status(): Record<PopulationView, ViewStatus> {
    return { all: this.statusOf('all', this.lastJudged), young: this.statusOf('young', this.lastJudged) };
  }

  judge(time: number): AlarmChange[] {
    if (!this.layout) return [];
    this.lastJudged = time;
    let changes: AlarmChange[] | undefined;
    for (const view of VIEWS) {
      const found = populationLevels(this.config, this.layout, this.windows.get(view)!.sum(time));
      const before = this.alarms[view];
      const stepped = stepAlarm(this.config.alarm, before, time, found.anyFlagged, found.maxLevel);
      this.alarms[view] = stepped.state;
      if (stepped.started) (changes ??= []).push({ view, started: true, status: this.statusOf(view, time) });
      if (stepped.ended) (changes ??= []).push({ view, started: false, status: this.statusOf(view, time), durationMs: time - before.since });
    }
    return changes ?? NO_CHANGES;
  }

  async flush(time: number): Promise<void> {
    if (!this.sync || !this.layout) return;
    if (this.flushing) return this.flushing;
    const sending = this.pending;
    this.pending = new Map();
    this.flushing = this.exchange(this.sync, this.layout, sending, time);
    return this.flushing;
  }

  /** Sends `sending` and reads every live bucket back, in one pipeline; on a failure keeps what Redis did not take. */
  private async exchange(sync: PopulationSync, shape: PopulationLayout, sending: PendingCounts, time: number): Promise<void> {
    // The buckets whose counts Redis took: never sent again, even when another command of the exchange failed.
    const delivered = new Set<string>();
    try {
      const pipeline = (sync.redis as PopulationRedis).pipeline() as unknown as PopulationPipeline;
      const adds = queueAdds(pipeline, sending, time, this.config.window, (view, start) => this.keyOf(view, start));
      const reads: { view: PopulationView; start: number }[] = [];
      for (const view of VIEWS)
        for (const start of this.windows.get(view)!.liveStarts(time)) reads.push({ view, start }), pipeline.hgetall(this.keyOf(view, start));
      const results = (await pipeline.exec()) ?? [];
      adds.forEach((key, i) => {
        if (results[i] && !results[i][0]) delivered.add(key);
      });
      const failed = results.find(([error]) => error);
      if (failed) throw failed[0];
      if (this.layout !== shape) return;
      this.replaceWindows(sync, reads, results.slice(results.length - reads.length));
      sync.onSuccess();
    } catch (error) {
      // Keep the unsent counts for the next flush (those still inside the window; not those Redis took).
      if (this.layout === shape) this.keepUnsent(sending, delivered, time);
      sync.onError(error);
    } finally {
      this.flushing = undefined;
    }
  }

  /** The windows become what Redis holds, with this process's counts not yet sent on top. */
  private replaceWindows(sync: PopulationSync, reads: readonly { view: PopulationView; start: number }[], replies: [Error | null, unknown][]): void {
    const fresh = new Map<PopulationView, Map<number, Float64Array>>(VIEWS.map((v) => [v, new Map()]));
    reads.forEach(({ view, start }, i) => {
      const counts = countsOf((replies[i]?.[1] ?? {}) as Record<string, string>, this.size);
      if (counts) fresh.get(view)!.set(start, counts);
    });
    addOnTop(fresh, this.pending, this.size);
    for (const view of VIEWS) this.windows.get(view)!.replace(fresh.get(view)!, sync.now());
  }

  private keepUnsent(sending: PendingCounts, delivered: ReadonlySet<string>, time: number): void {
    for (const [key, entry] of sending) {
      if (delivered.has(key) || entry.start <= time - this.config.window.lengthMs) continue;
      const current = this.pending.get(key);
      if (current) for (let i = 0; i < this.size; i++) current.counts[i] += entry.counts[i];
      else this.pending.set(key, entry);
    }
  }
}

export function createPopulationTracker(config: PopulationConfig, sync?: PopulationSync): PopulationTracker {
  const tracker = new Tracker(config, sync);
  if (sync) {
    const redis = sync.redis as PopulationRedis;
    if (typeof redis.msdPopulationAdd !== 'function') redis.defineCommand('msdPopulationAdd', { numberOfKeys: 1, lua: ADD });
  }
  const timer = sync ? setInterval(() => void tracker.flush(sync.now()), sync.flushMs) : undefined;
  timer?.unref();

  return {
    config,
    observe: (delta, young, time) => tracker.observe(delta, young, time),
    layoutFor: (classes) => tracker.layoutFor(classes),
    judge: (time) => tracker.judge(time),
    alarm: (view) => tracker.alarm(view),
    status: () => tracker.status(),
    flush: (time) => tracker.flush(time),
    close: async () => {
      if (timer) clearInterval(timer);
      if (sync) await tracker.flush(sync.now()).catch(() => {});
    },
  };
}
