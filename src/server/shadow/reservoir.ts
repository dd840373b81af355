/**
 * A bounded uniform sample of a stream of answered rows (reservoir sampling, Vitter's Algorithm R):
 * after n rows were offered, each of them is held with probability min(1, capacity / n), whatever
 * the order they came in. Memory grows with the rows held (doubling) up to capacity × (features +
 * 2 × classes) floats, and never past it.
 *
 * A row is the model input as the surrogate sees it, the model's original probabilities and the
 * probabilities the client got. Kept in memory only: nothing here logs or writes a row anywhere.
 */
import type { Random } from './random.js';

export interface ReservoirSnapshot {
  rows: number;
  /** rows × features inputs. */
  x: Float32Array;
  /** rows × classes, the model's original answers. */
  original: Float32Array;
  /** rows × classes, the answers the clients got. */
  defended: Float32Array;
}

export class Reservoir {
  /** Rows offered so far (held or not). */
  seen = 0;
  /** Rows held now (≤ capacity). */
  size = 0;
  private x: Float32Array;
  private original: Float32Array;
  private defended: Float32Array;

  constructor(
    readonly capacity: number,
    readonly features: number,
    readonly classes: number,
    private readonly random: Random,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`reservoir capacity must be an integer ≥ 1, got ${capacity}`);
    if (!Number.isInteger(features) || features < 1 || !Number.isInteger(classes) || classes < 2)
      throw new RangeError(`a reservoir row needs ≥ 1 feature and ≥ 2 classes, got ${features} and ${classes}`);
    const start = Math.min(capacity, 64);
    this.x = new Float32Array(start * features);
    this.original = new Float32Array(start * classes);
    this.defended = new Float32Array(start * classes);
  }

  /** Rows the arrays have room for now. */
  private get room(): number {
    return this.original.length / this.classes;
  }

  private grow(): void {
    const rows = Math.min(this.capacity, this.room * 2);
    const larger = (from: Float32Array, width: number) => {
      const to = new Float32Array(rows * width);
      to.set(from);
      return to;
    };
    this.x = larger(this.x, this.features);
    this.original = larger(this.original, this.classes);
    this.defended = larger(this.defended, this.classes);
  }

  /**
   * Offers row `row` of the given arrays; returns the slot it went to, or -1 when it was not kept.
   * The n-th row offered fills an empty slot while there is one, else replaces a uniformly drawn
   * slot with probability capacity / n.
   */
  offer(x: Float32Array, original: Float32Array, defended: Float32Array, row: number): number {
    this.seen += 1;
    let slot: number;
    if (this.size < this.capacity) {
      if (this.size === this.room) this.grow();
      slot = this.size++;
    } else {
      slot = Math.floor(this.random() * this.seen);
      if (slot >= this.capacity) return -1;
    }
    const { features, classes } = this;
    this.x.set(x.subarray(row * features, (row + 1) * features), slot * features);
    this.original.set(original.subarray(row * classes, (row + 1) * classes), slot * classes);
    this.defended.set(defended.subarray(row * classes, (row + 1) * classes), slot * classes);
    return slot;
  }

  /** A copy of the rows held now (the reservoir goes on filling while the copy is used elsewhere). */
  snapshot(): ReservoirSnapshot {
    const { size, features, classes } = this;
    return {
      rows: size,
      x: this.x.slice(0, size * features),
      original: this.original.slice(0, size * classes),
      defended: this.defended.slice(0, size * classes),
    };
  }

  /** Bytes the reservoir's arrays take now (at most capacity × (features + 2 × classes) × 4). */
  get bytes(): number {
    return this.x.byteLength + this.original.byteLength + this.defended.byteLength;
  }
}
