/**
 * A bounded map whose entries carry a rank (the client stores use 0: clean, 1: escalated,
 * 2: throttled, 3: refused). Over capacity, the entry of the lowest rank that was touched least
 * recently goes first: a flood of new (clean) clients never pushes out a flagged one while a clean
 * one is left. One Map per rank, each in touch order, so every operation is O(1) (eviction O(ranks)).
 */
const NONE: readonly string[] = Object.freeze([]);

export class RankedMap<V> {
  private readonly byRank: Map<string, V>[];
  private readonly rankOf = new Map<string, number>();

  constructor(
    readonly capacity: number,
    readonly ranks = 4,
  ) {
    this.byRank = Array.from({ length: ranks }, () => new Map<string, V>());
  }

  get size(): number {
    return this.rankOf.size;
  }

  /** Entries of one rank. */
  count(rank: number): number {
    return this.byRank[rank]?.size ?? 0;
  }

  get(id: string): V | undefined {
    const rank = this.rankOf.get(id);
    return rank === undefined ? undefined : this.byRank[rank].get(id);
  }

  rank(id: string): number | undefined {
    return this.rankOf.get(id);
  }

  /** Marks the entry as just used (last to go within its rank). */
  touch(id: string): void {
    this.getTouched(id);
  }

  /** get, then touch: one lookup of the rank instead of two (the client stores do both per request). */
  getTouched(id: string): V | undefined {
    const rank = this.rankOf.get(id);
    if (rank === undefined) return undefined;
    const map = this.byRank[rank];
    const value = map.get(id) as V;
    map.delete(id);
    map.set(id, value);
    return value;
  }

  /** Sets (and touches) the entry; evicts beyond capacity; returns the ids evicted. */
  set(id: string, value: V, rank: number): readonly string[] {
    const r = Math.max(0, Math.min(this.ranks - 1, Math.floor(rank) || 0));
    const previous = this.rankOf.get(id);
    if (previous !== undefined) this.byRank[previous].delete(id);
    this.byRank[r].set(id, value);
    // Most updates keep the rank (and a known id cannot push the size over): nothing more to do.
    if (previous === r) return NONE;
    this.rankOf.set(id, r);
    if (this.rankOf.size <= this.capacity) return NONE;
    const evicted: string[] = [];
    while (this.rankOf.size > this.capacity) {
      const map = this.byRank.find((m) => m.size > 0)!;
      const oldest = map.keys().next().value as string;
      map.delete(oldest);
      this.rankOf.delete(oldest);
      evicted.push(oldest);
    }
    return evicted;
  }

  delete(id: string): boolean {
    const rank = this.rankOf.get(id);
    if (rank === undefined) return false;
    this.byRank[rank].delete(id);
    this.rankOf.delete(id);
    return true;
  }

  /** Highest rank first; within a rank, most recently touched first. */
  *entries(): Generator<[string, V, number]> {
    for (let rank = this.ranks - 1; rank >= 0; rank--) {
      const ids = [...this.byRank[rank].keys()].reverse();
      for (const id of ids) yield [id, this.byRank[rank].get(id) as V, rank];
    }
  }

  clear(): void {
    for (const map of this.byRank) map.clear();
    this.rankOf.clear();
  }
}
