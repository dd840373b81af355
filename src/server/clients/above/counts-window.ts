/** The time-bucketed counts of one population view (see population.ts). */
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
