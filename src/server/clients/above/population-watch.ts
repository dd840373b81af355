/**
 * Population detection for the gate: every observed request goes into the views (`young` too, for
 * a client with fewer than youngQueries queries before it), the views are judged and their alarms
 * logged and counted. The counts are this process's until the shared Redis is attached; then the
 * tracker on Redis takes them over (the window goes on) and an alarm that holds goes on with it.
 */
import type { Logger } from 'pino';
import { summarise, type PopulationConfig } from '../../../detection/above/population.js';
import type { Assessment, ClientObservation } from '../../../detection/types.js';
import type { PopulationMetrics } from '../metrics.js';
import type { RedisClientStore } from '../store-redis.js';
import {
  createPopulationTracker,
  MAX_LAYOUTS,
  VIEWS,
  type AlarmChange,
  type LayoutStatus,
  type PopulationTracker,
  type PopulationView,
  type ViewStatus,
} from './population.js';

export interface PopulationOverview {
  youngQueries: number;
  tier?: string;
  /** Per view: the layout whose alarm started first, else the one with the most queries in the window. */
  views: Record<PopulationView, ViewStatus>;
  /** Every layout counted (one per number of classes answered), with its own views. */
  layouts: LayoutStatus[];
}

export interface PopulationWatchDeps {
  metrics: PopulationMetrics;
  logger?: Logger;
  /** The probation tier's name, for the logs and the overview. */
  tier?: string;
}

/** This process's counts of one layout, view membership and time bucket, observed before Redis attached. */
interface EarlyCounts {
  readonly classes: number;
  readonly young: boolean;
  readonly start: number;
  readonly counts: Float64Array;
}

export class PopulationWatch {
  private tracker: PopulationTracker;
  private warnedLayouts = false;
  /**
   * The counts observed before Redis attached, per bucket, for the tracker on Redis to take over.
   * Redis attaches moments after start-up: kept for one window from the first observation only
   * (in memory mode it never attaches), so at most layouts × 2 × the window's buckets.
   */
  private early: Map<string, EarlyCounts> | undefined = new Map();
  private earlyUntil: number | undefined;

  constructor(
    private readonly config: PopulationConfig,
    private readonly deps: PopulationWatchDeps,
  ) {
    this.tracker = createPopulationTracker(config);
  }

  /** Adds one request to the views and judges them; returns whether its client counts as young. */
  observe(observation: ClientObservation, anonymous: boolean, historyBefore: number, time: number): boolean {
    // The anonymous class is one shared history: in the `all` view, never young.
    const young = !anonymous && historyBefore < this.config.youngQueries;
    const layout = this.tracker.layoutFor(observation.probs.cols);
    if (layout) {
      const delta = summarise(layout, this.config.ood.confidenceThreshold, observation.probs, observation.hardness, observation.matches);
      this.tracker.observe(delta, young, time);
      this.keepEarly(layout.classes, delta, young, time);
    } else this.warnUncounted(observation.probs.cols);
    for (const change of this.tracker.judge(time)) this.logAlarm(change);
    return young;
  }

  /** A population alarm holds (either view, any layout). */
  alarmed(): boolean {
    return this.tracker.alarm('all') || this.tracker.alarm('young');
  }

  /** An older client whose own unsure share is above suspectRate (with at least 10 queries in its window). */
  suspect(own: Assessment): boolean {
    const ood = own.verdicts.find((v) => v.detector === 'ood');
    const rate = ood?.evidence.rate;
    const queries = ood?.evidence.queries ?? 0;
    return typeof rate === 'number' && queries >= 10 && rate > this.config.suspectRate;
  }

  /** The views as of the last judgement. */
  overview(): PopulationOverview {
    return { youngQueries: this.config.youngQueries, tier: this.deps.tier, views: this.tracker.status(), layouts: this.tracker.layouts() };
  }

  /** Per view, the alarm and the detectors' scores, for the metrics' gauges. */
  gauges(): Record<string, { alarm: boolean; scores: Record<string, number> }> {
    const status = this.tracker.status();
    return Object.fromEntries(
      VIEWS.map((view) => [view, { alarm: status[view].alarm, scores: Object.fromEntries(status[view].verdicts.map((v) => [v.detector, v.score])) }]),
    );
  }

  /**
   * From now on the counts are shared through Redis. This process's counts so far go over (and to
   * Redis with the next flush), so the window goes on; an alarm that holds goes on as the same alarm
   * (no second start line), or, when the counts no longer flag it, ends with its line.
   */
  attachRedis(store: RedisClientStore, sync: { flushMs: number; onError(error: unknown): void; onSuccess(): void; now: () => number }): void {
    const previous = this.tracker;
    const early = this.early;
    this.early = undefined;
    const next = createPopulationTracker(this.config, { redis: store.connection, prefix: store.keyPrefix, ...sync });
    const layouts = previous.layouts();
    // The layouts in the order first seen: MAX_LAYOUTS keeps counting the same ones.
    for (const { classes } of layouts) next.layoutFor(classes);
    for (const { classes, young, start, counts } of [...(early?.values() ?? [])].sort((a, b) => a.start - b.start)) {
      if (next.layoutFor(classes)) next.observe(counts, young, start);
    }
    const holding = new Map<string, AlarmChange>();
    const time = sync.now();
    for (const layout of layouts) {
      for (const view of VIEWS) {
        const status = layout.views[view];
        if (status.alarm) holding.set(`${layout.classes}:${view}`, { view, layout, started: false, status, durationMs: time - (status.since ?? time) });
      }
    }
    this.tracker = next;
    for (const change of next.judge(time)) {
      const key = `${change.layout.classes}:${change.view}`;
      // The alarm that held before the hand-over: not a new one.
      if (change.started && holding.delete(key)) continue;
      this.logAlarm(change);
    }
    for (const ended of holding.values()) this.logAlarm(ended);
    void previous.close();
  }

  close(): Promise<void> {
    return this.tracker.close();
  }

  /** Keeps a request's counts for the tracker on Redis, while none is attached (see `early`). */
  private keepEarly(classes: number, delta: Float64Array, young: boolean, time: number): void {
    if (!this.early) return;
    this.earlyUntil ??= time + this.config.window.lengthMs;
    if (time > this.earlyUntil) {
      this.early = undefined;
      return;
    }
    const start = Math.floor(time / this.config.window.bucketMs) * this.config.window.bucketMs;
    const key = `${classes}:${young ? 'young' : 'older'}:${start}`;
    let entry = this.early.get(key);
    if (!entry) this.early.set(key, (entry = { classes, young, start, counts: new Float64Array(delta.length) }));
    for (let i = 0; i < delta.length; i++) entry.counts[i] += delta[i];
  }

  /** Once per watch: answers of a layout past MAX_LAYOUTS are not counted. */
  private warnUncounted(classes: number): void {
    if (this.warnedLayouts) return;
    this.warnedLayouts = true;
    this.deps.logger?.warn(
      { classes, layouts: MAX_LAYOUTS },
      `population detection counts answers of at most ${MAX_LAYOUTS} numbers of classes (models): answers with ${classes} classes, and of any further one, are not counted`,
    );
  }

  private logAlarm(change: AlarmChange): void {
    const { metrics, logger } = this.deps;
    const evidence = Object.fromEntries(change.status.verdicts.map((v) => [v.detector, { flagged: v.flagged, score: v.score, ...v.evidence }]));
    if (change.started) {
      metrics.alarms.inc({ view: change.view });
      const flagged = change.status.verdicts.filter((v) => v.flagged).map((v) => v.detector);
      logger?.warn(
        {
          view: change.view,
          classes: change.layout.classes,
          reason: `flagged by ${flagged.join(', ')}`,
          tier: this.deps.tier,
          youngQueries: this.config.youngQueries,
          evidence,
        },
        `population alarm started: young identities${this.config.suspectRate < 1 ? ' and suspects' : ''} get the probation tier`,
      );
    } else {
      logger?.info(
        { view: change.view, classes: change.layout.classes, durationSeconds: Math.round((change.durationMs ?? 0) / 1000), evidence },
        'population alarm ended',
      );
    }
  }
}
