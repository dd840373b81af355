/**
 * The shadow's sampled rows: each tier's reservoirs (training part, held-back part), filled from the
 * answers the serving layer offers, and copied out for a round. Rows unlike the held-out rows are
 * counted as skipped and never kept.
 */
import type { Logger } from 'pino';
import type { InputRows } from '../protocols/index.js';
import type { ShadowMetrics } from './metrics.js';
import type { ResolvedShadow } from './options.js';
import type { RoundGroup } from './protocol.js';
import type { Random } from './random.js';
import { Reservoir } from './reservoir.js';
import { top1Of } from './scores.js';
import type { ShadowAnswer } from './shadow.js';

interface TierStore {
  train: Reservoir;
  back: Reservoir;
}

/** One round's rows, and the buffers to move to the trainer thread with them. */
export interface RoundRows {
  groups: RoundGroup[];
  transfer: ArrayBuffer[];
}

export class ShadowSamples {
  private readonly stores = new Map<string, TierStore>();
  /** The model's classes and one input's shape, as the first kept rows show them. */
  classes: number | undefined;
  inputShape: number[] | undefined;
  rowsSinceRound = 0;
  private warnedRange = false;
  private warnedShape = false;
  private warnedCapacity = false;
  private readonly heldOutMax: number;

  /** `due` is called once `every.samples` new rows were kept since the last round. */
  constructor(
    private readonly options: ResolvedShadow,
    private readonly tierLabels: ReadonlySet<string>,
    private readonly random: Random,
    private readonly metrics: ShadowMetrics,
    private readonly logger: Logger | undefined,
    private readonly due: () => void,
  ) {
    this.heldOutMax = options.heldOut.x.reduce((m, v) => Math.max(m, v), Number.NEGATIVE_INFINITY);
  }

  /** Takes the rows of a drawn answer of a known tier; reads its inputs (maybe later, for images); never throws. */
  offer(answer: ShadowAnswer): void {
    let inputs: InputRows | Promise<InputRows>;
    try {
      inputs = typeof answer.inputs === 'function' ? answer.inputs() : answer.inputs;
    } catch {
      this.metrics.skippedRows.inc({ reason: 'unreadable' }, answer.original.rows);
      return;
    }
    if (inputs instanceof Promise) {
      inputs.then(
        (read) => this.keep(answer, read),
        () => this.metrics.skippedRows.inc({ reason: 'unreadable' }, answer.original.rows),
      );
      return;
    }
    this.keep(answer, inputs);
  }

  /** Rows held per tier (training part, held-back part). */
  held(): Record<string, { train: number; back: number }> {
    return Object.fromEntries([...this.stores].map(([tier, s]) => [tier, { train: s.train.size, back: s.back.size }]));
  }

  /** Copies of the reservoirs of every tier with at least `minSamples` training rows. */
  roundRows(): RoundRows {
    const groups: RoundGroup[] = [];
    const transfer: ArrayBuffer[] = [];
    for (const [tier, store] of this.stores) {
      if (store.train.size < this.options.minSamples) continue;
      const train = store.train.snapshot();
      const back = store.back.snapshot();
      const backTop1 = top1Of(back.original, back.rows, store.back.classes);
      groups.push({
        tier,
        rows: train.rows,
        x: train.x,
        original: train.original,
        defended: train.defended,
        back: { rows: back.rows, x: back.x, originalTop1: backTop1 },
      });
      transfer.push(
        train.x.buffer as ArrayBuffer,
        train.original.buffer as ArrayBuffer,
        train.defended.buffer as ArrayBuffer,
        back.x.buffer as ArrayBuffer,
        backTop1.buffer as ArrayBuffer,
      );
    }
    return { groups, transfer };
  }

  /** take(), whose failure (a bug) is logged without the row and never reaches the serving path. */
  private keep(answer: ShadowAnswer, inputs: InputRows): void {
    try {
      this.take(answer, inputs);
    } catch (error) {
      this.logger?.warn({ error: (error as Error).name }, 'shadow: a sampled answer could not be kept');
    }
  }

  private take(answer: ShadowAnswer, inputs: InputRows): void {
    const { original, defended, tier } = answer;
    if (!this.fits(answer, inputs)) return;
    this.classes ??= original.cols;
    if (!this.inputShape) {
      const shape = inputs.shape && inputs.shape.reduce((a, b) => a * b, 1) === inputs.cols ? [...inputs.shape] : [inputs.cols];
      this.inputShape = this.options.inputShape ? [...this.options.inputShape] : shape;
    }
    const store = this.storeFor(tier, inputs.cols, original.cols);
    for (let r = 0; r < inputs.rows; r++) {
      this.checkRange(inputs, r);
      (this.random() < this.options.holdBack ? store.back : store.train).offer(inputs.data, original.data, defended.data, r);
    }
    this.metrics.sampledRows.inc({ tier }, inputs.rows);
    this.metrics.reservoirRows.set({ tier }, store.train.size + store.back.size);
    this.rowsSinceRound += inputs.rows;
    if (this.options.every.samples !== undefined && this.rowsSinceRound >= this.options.every.samples) this.due();
  }

  /** Whether the answer's rows agree with each other and with the held-out rows; counts them as skipped when not. */
  private fits({ original, defended }: ShadowAnswer, inputs: InputRows): boolean {
    if (inputs.rows !== original.rows || defended.rows !== original.rows || defended.cols !== original.cols) {
      this.metrics.skippedRows.inc({ reason: 'shape' }, original.rows);
      return false;
    }
    const { heldOut } = this.options;
    if (inputs.cols !== heldOut.features || (this.classes !== undefined && original.cols !== this.classes)) {
      this.metrics.skippedRows.inc({ reason: 'shape' }, inputs.rows);
      if (!this.warnedShape) {
        this.warnedShape = true;
        this.logger?.warn(
          { features: inputs.cols, heldOutFeatures: heldOut.features, classes: original.cols },
          'shadow: sampled rows unlike the held-out rows are skipped',
        );
      }
      return false;
    }
    return true;
  }

  /** Warns once when inputs go past 1 while the held-out rows lie in 0..1 (a scaling left out). */
  private checkRange(inputs: InputRows, r: number): void {
    if (this.warnedRange || !(this.heldOutMax <= 1.0001)) return;
    const row = inputs.data.subarray(r * inputs.cols, (r + 1) * inputs.cols);
    if (row.some((v) => v > 1.5)) {
      this.warnedRange = true;
      this.logger?.warn(
        'shadow: sampled inputs go past 1 while the held-out rows lie in 0..1; scale the requests’ inputs (--input-scale, --image-scale) as the held-out rows are',
      );
    }
  }

  /** Reservoirs of a tier, sized when its first row comes (the capacity lowered to fit the memory cap). */
  private storeFor(tier: string, features: number, cols: number): TierStore {
    let store = this.stores.get(tier);
    if (store) return store;
    const { capacity: asked, maxMemoryMb, holdBack: backShare } = this.options;
    const rowBytes = (features + 2 * cols) * 4;
    const budgetRows = Math.floor((maxMemoryMb * 1024 * 1024) / (this.tierLabels.size * rowBytes * (1 + backShare / (1 - backShare))));
    const capacity = Math.max(10, Math.min(asked, budgetRows));
    if (capacity < asked && !this.warnedCapacity) {
      this.warnedCapacity = true;
      this.logger?.warn({ capacity, asked, maxMemoryMb }, 'shadow: reservoir capacity lowered to fit the memory cap');
    }
    const backCapacity = Math.max(1, Math.ceil((capacity * backShare) / (1 - backShare)));
    store = { train: new Reservoir(capacity, features, cols, this.random), back: new Reservoir(backCapacity, features, cols, this.random) };
    this.stores.set(tier, store);
    return store;
  }
}
