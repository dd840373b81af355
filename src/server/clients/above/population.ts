/**
 * The serving side of population detection (src/detection/above/population.ts holds the math): two views of
 * the recent traffic, `all` (every identified client) and `young` (clients with fewer than
 * youngQueries queries before the request), each a window of additive counts in time buckets, judged
 * after every observation, with an alarm that has hysteresis.
 *
 * Per layout: answers with another number of classes (another model behind the same proxy) are
 * counted in views of their own, with their own alarms; at most MAX_LAYOUTS layouts, the first seen.
 *
 * Memory: the counts are this process's. Redis: each process adds its counts to per-bucket hashes
 * (`<prefix>~pop:<classes>x<bins>:<view>:<bucket start>`, HINCRBY in one script call per key, expiring one
 * bucket after it leaves the window) every flushMs and reads every live bucket of its layouts back, so each
 * replica judges the traffic of all of them (its own not yet flushed counts added). Keys: per layout,
 * 2 views × (buckets in the window + 1), whatever the traffic. A Redis failure is counted and logged by
 * the caller; the view goes on with what this process knows (its own counts), and the unsent counts are
 * kept for the next flush (bounded by the window: older buckets are dropped).
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
  readonly layout: PopulationLayout;
  readonly started: boolean;
  readonly status: ViewStatus;
  /** For an end: how long the alarm held. */
  readonly durationMs?: number;
}

/** One layout's views (K classes, HODA's bins). */
export interface LayoutStatus extends PopulationLayout {
  readonly views: Record<PopulationView, ViewStatus>;
}

/** At most this many layouts are counted (the first seen); answers of another one are not. */
export const MAX_LAYOUTS = 16;

export interface PopulationTracker {
  readonly config: PopulationConfig;
  /**
   * Adds one request's counts (src/detection/above/population.ts `summarise`, with a layout from
   * layoutFor; its length tells the layout) to `all` and, for a young client, to `young`.
   */
  observe(delta: Float64Array, young: boolean, time: number): void;
  /** The layout of answers with `classes` classes (K classes and HODA's bins); undefined: not counted (MAX_LAYOUTS others are). */
  layoutFor(classes: number): PopulationLayout | undefined;
  /** Judges both views of every layout at `time`; returns the alarms that started or ended. */
  judge(time: number): AlarmChange[];
  /** The view's alarm holds in some layout. */
  alarm(view: PopulationView): boolean;
  /** Each view as of the last judgement: the layout whose alarm started first, else the one with the most queries. */
  status(): Record<PopulationView, ViewStatus>;
  /** Every layout's views as of the last judgement. */
  layouts(): LayoutStatus[];
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
type PendingEntry = { view: PopulationView; start: number; counts: Float64Array };
type PendingCounts = Map<string, PendingEntry>;

/** Queues the adds of the unsent counts still worth sending; returns the entries queued, in pipeline order. */
function queueAdds(
  pipeline: PopulationPipeline,
  sending: PendingCounts,
  time: number,
  { lengthMs, bucketMs }: PopulationConfig['window'],
  keyOf: (view: PopulationView, start: number) => string,
): PendingEntry[] {
  const adds: PendingEntry[] = [];
  for (const entry of sending.values()) {
    const { view, start, counts } = entry;
    // A bucket is read while its start is within the window: its key lives until then, plus one
    // bucket for replicas whose clocks run behind (a TTL from the last add would outlive it).
    const expiresInMs = start + lengthMs + bucketMs - time;
    if (expiresInMs <= bucketMs) continue;
    const args: (string | number)[] = [];
    for (let i = 0; i < counts.length; i++) if (counts[i] !== 0) args.push(i, counts[i]);
    if (!args.length) continue;
    pipeline.msdPopulationAdd(keyOf(view, start), ...args, expiresInMs);
    adds.push(entry);
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

/** A bucket read back from Redis. */
type Read = { counts: LayoutCounts; view: PopulationView; start: number };

/** One layout's views: their windows, unsent counts and alarms. */
class LayoutCounts {
  readonly size: number;
  /** The layout in the Redis keys: `<classes>x<bins>`. */
  readonly tag: string;
  readonly windows: Record<PopulationView, CountsWindow>;
  // Redis: counts not yet sent, per view and bucket.
  pending: PendingCounts = new Map();
  readonly alarms: Record<PopulationView, AlarmState> = { all: initialAlarmState(), young: initialAlarmState() };

  constructor(
    readonly layout: PopulationLayout,
    { lengthMs, bucketMs }: PopulationConfig['window'],
  ) {
    this.size = countsLength(layout);
    this.tag = `${layout.classes}x${layout.bins}`;
    this.windows = { all: new CountsWindow(lengthMs, bucketMs, this.size), young: new CountsWindow(lengthMs, bucketMs, this.size) };
  }
}

/** The views' counts and alarms, per layout; with `sync`, the exchange of the counts with Redis. */
class Tracker {
  // Per layout, keyed by the length of its counts (HODA's bins are the same for all).
  private readonly layouts = new Map<number, LayoutCounts>();
  // The time of the last judgement: status() shows the views as of then.
  private lastJudged = 0;
  private flushing: Promise<void> | undefined;

  constructor(
    readonly config: PopulationConfig,
    private readonly sync?: PopulationSync,
  ) {}

  layoutFor(classes: number): PopulationLayout | undefined {
    const layout = { classes, bins: this.config.hoda.enabled ? this.config.hoda.bins : 0 };
    const known = this.layouts.get(countsLength(layout));
    if (known) return known.layout;
    if (this.layouts.size >= MAX_LAYOUTS) return undefined;
    const counts = new LayoutCounts(layout, this.config.window);
    this.layouts.set(counts.size, counts);
    return layout;
  }

  private keyOf(counts: LayoutCounts, view: PopulationView, start: number): string {
    return `${this.sync?.prefix ?? ''}~pop:${counts.tag}:${view}:${start}`;
  }

  observe(delta: Float64Array, young: boolean, time: number): void {
    const counts = this.layouts.get(delta.length);
    if (!counts) return;
    for (const view of VIEWS) {
      if (view === 'young' && !young) continue;
      const window = counts.windows[view];
      window.add(delta, time);
      if (!this.sync) continue;
      const start = window.bucketOf(time);
      const key = `${view}:${start}`;
      let entry = counts.pending.get(key);
      if (!entry) counts.pending.set(key, (entry = { view, start, counts: new Float64Array(counts.size) }));
      for (let i = 0; i < counts.size; i++) entry.counts[i] += delta[i];
    }
  }

  alarm(view: PopulationView): boolean {
    for (const counts of this.layouts.values()) if (counts.alarms[view].on) return true;
    return false;
  }

  /** A layout's view as of `time` (verdicts built: for logs and listings, not per request). */
  private statusOf(counts: LayoutCounts, view: PopulationView, time: number): ViewStatus {
    const totals = counts.windows[view].sum(time);
    const state = counts.alarms[view];
    return {
      alarm: state.on,
      ...(state.on ? { since: state.since } : {}),
      queries: totals[0],
      verdicts: populationVerdicts(this.config, counts.layout, totals).verdicts,
    };
  }

  /** Per view, the layout whose alarm started first, else the one with the most queries in the window. */
  status(): Record<PopulationView, ViewStatus> {
    const lead = (view: PopulationView): ViewStatus => {
      let best: ViewStatus | undefined;
      for (const counts of this.layouts.values()) {
        const status = this.statusOf(counts, view, this.lastJudged);
        const ahead = !best || (best.alarm ? status.alarm && status.since! < best.since! : status.alarm || status.queries > best.queries);
        if (ahead) best = status;
      }
      return best ?? { alarm: false, queries: 0, verdicts: [] };
    };
    return { all: lead('all'), young: lead('young') };
  }

  layoutStatus(): LayoutStatus[] {
    return Array.from(this.layouts.values(), (counts) => ({
      ...counts.layout,
      views: { all: this.statusOf(counts, 'all', this.lastJudged), young: this.statusOf(counts, 'young', this.lastJudged) },
    }));
  }

  judge(time: number): AlarmChange[] {
    this.lastJudged = time;
    let changes: AlarmChange[] | undefined;
    for (const counts of this.layouts.values()) {
      const { layout } = counts;
      for (const view of VIEWS) {
        const found = populationLevels(this.config, layout, counts.windows[view].sum(time));
        const before = counts.alarms[view];
        const stepped = stepAlarm(this.config.alarm, before, time, found.anyFlagged, found.maxLevel);
        counts.alarms[view] = stepped.state;
        if (stepped.started) (changes ??= []).push({ view, layout, started: true, status: this.statusOf(counts, view, time) });
        if (stepped.ended) (changes ??= []).push({ view, layout, started: false, status: this.statusOf(counts, view, time), durationMs: time - before.since });
      }
    }
    return changes ?? NO_CHANGES;
  }

  async flush(time: number): Promise<void> {
    if (!this.sync || !this.layouts.size) return;
    if (this.flushing) return this.flushing;
    const sending = new Map<LayoutCounts, PendingCounts>();
    for (const counts of this.layouts.values()) {
      sending.set(counts, counts.pending);
      counts.pending = new Map();
    }
    this.flushing = this.exchange(this.sync, sending, time);
    return this.flushing;
  }

  /** Sends `sending` and reads every live bucket of its layouts back, in one pipeline; on a failure keeps what Redis did not take. */
  private async exchange(sync: PopulationSync, sending: Map<LayoutCounts, PendingCounts>, time: number): Promise<void> {
    // The buckets whose counts Redis took: never sent again, even when another command of the exchange failed.
    const delivered = new Set<PendingEntry>();
    try {
      const pipeline = (sync.redis as PopulationRedis).pipeline() as unknown as PopulationPipeline;
      const adds: PendingEntry[] = [];
      for (const [counts, pending] of sending)
        adds.push(...queueAdds(pipeline, pending, time, this.config.window, (view, start) => this.keyOf(counts, view, start)));
      const reads: Read[] = [];
      for (const counts of sending.keys())
        for (const view of VIEWS)
          for (const start of counts.windows[view].liveStarts(time)) reads.push({ counts, view, start }), pipeline.hgetall(this.keyOf(counts, view, start));
      const results = (await pipeline.exec()) ?? [];
      adds.forEach((entry, i) => {
        if (results[i] && !results[i][0]) delivered.add(entry);
      });
      const failed = results.find(([error]) => error);
      if (failed) throw failed[0];
      this.replaceWindows(sync, reads, results.slice(results.length - reads.length));
      sync.onSuccess();
    } catch (error) {
      // Keep the unsent counts for the next flush (those still inside the window; not those Redis took).
      for (const [counts, pending] of sending) this.keepUnsent(counts, pending, delivered, time);
      sync.onError(error);
    } finally {
      this.flushing = undefined;
    }
  }

  /** Each layout read becomes what Redis holds, with this process's counts not yet sent on top. */
  private replaceWindows(sync: PopulationSync, reads: readonly Read[], replies: [Error | null, unknown][]): void {
    const fresh = new Map<LayoutCounts, Map<PopulationView, Map<number, Float64Array>>>();
    reads.forEach(({ counts, view, start }, i) => {
      let views = fresh.get(counts);
      if (!views) fresh.set(counts, (views = new Map(VIEWS.map((v) => [v, new Map()]))));
      const bucket = countsOf((replies[i]?.[1] ?? {}) as Record<string, string>, counts.size);
      if (bucket) views.get(view)!.set(start, bucket);
    });
    for (const [counts, views] of fresh) {
      addOnTop(views, counts.pending, counts.size);
      for (const view of VIEWS) counts.windows[view].replace(views.get(view)!, sync.now());
    }
  }

  private keepUnsent(counts: LayoutCounts, sending: PendingCounts, delivered: ReadonlySet<PendingEntry>, time: number): void {
    for (const [key, entry] of sending) {
      if (delivered.has(entry) || entry.start <= time - this.config.window.lengthMs) continue;
      const current = counts.pending.get(key);
      if (current) for (let i = 0; i < counts.size; i++) current.counts[i] += entry.counts[i];
      else counts.pending.set(key, entry);
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
    layouts: () => tracker.layoutStatus(),
    flush: (time) => tracker.flush(time),
    close: async () => {
      if (timer) clearInterval(timer);
      if (sync) await tracker.flush(sync.now()).catch(() => {});
    },
  };
}
