/**
 * Ordering class indices by a per-class value without a comparator callback: a stable LSD radix
 * sort on the value's float32 bit pattern, four passes of 8 bits, O(K). Callback sorts (and
 * even V8's native typed-array sort) dominate per-row costs at K in the thousands.
 */

const RADIX_BITS = 8;
const BUCKETS = 1 << RADIX_BITS;
const MASK = BUCKETS - 1;
/** Below this many entries an insertion sort beats clearing the radix counters. */
const SMALL = 32;

export class RadixOrder {
  private readonly f32: Float32Array;
  private readonly bits: Uint32Array;
  private readonly spareBits: Uint32Array;
  private readonly spareIndex: Int32Array;
  private readonly counts: Int32Array;

  constructor(capacity: number) {
    this.f32 = new Float32Array(capacity);
    this.bits = new Uint32Array(this.f32.buffer);
    this.spareBits = new Uint32Array(capacity);
    this.spareIndex = new Int32Array(capacity);
    this.counts = new Int32Array(BUCKETS);
  }

  /**
   * Reorders index[0, count) by ascending value[index[i]] (rounded to float32, −0 as +0), or
   * descending if `descending`; equal values keep their incoming order.
   */
  sort(index: Int32Array, count: number, value: ArrayLike<number>, valueOffset = 0, descending = false): void {
    const { f32, bits } = this;
    for (let i = 0; i < count; i++) {
      const v = value[valueOffset + index[i]];
      f32[i] = descending ? -v : v;
    }
    for (let i = 0; i < count; i++) {
      const b = bits[i];
      // Unsigned order of these patterns is the numeric order (negatives flipped, −0 = +0).
      bits[i] = b === 0x80000000 ? 0x80000000 : b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
    }
    if (count <= SMALL) {
      insertionSort(bits, index, count);
      return;
    }
    let srcBits = bits;
    let srcIndex = index;
    let dstBits = this.spareBits;
    let dstIndex = this.spareIndex;
    const { counts } = this;
    for (let shift = 0; shift < 32; shift += RADIX_BITS) {
      counts.fill(0);
      for (let i = 0; i < count; i++) counts[(srcBits[i] >>> shift) & MASK]++;
      let total = 0;
      for (let d = 0; d < BUCKETS; d++) {
        const c = counts[d];
        counts[d] = total;
        total += c;
      }
      for (let i = 0; i < count; i++) {
        const b = srcBits[i];
        const at = counts[(b >>> shift) & MASK]++;
        dstBits[at] = b;
        dstIndex[at] = srcIndex[i];
      }
      [srcBits, dstBits] = [dstBits, srcBits];
      [srcIndex, dstIndex] = [dstIndex, srcIndex];
    }
    // An even number of passes leaves the result in `index`.
    if (srcIndex !== index) index.set(srcIndex.subarray(0, count));
  }
}

/** Stable insertion sort of index[0, count) by bits. */
function insertionSort(bits: Uint32Array, index: Int32Array, count: number): void {
  for (let i = 1; i < count; i++) {
    const b = bits[i];
    const x = index[i];
    let j = i - 1;
    while (j >= 0 && bits[j] > b) {
      bits[j + 1] = bits[j];
      index[j + 1] = index[j];
      j--;
    }
    bits[j + 1] = b;
    index[j + 1] = x;
  }
}
