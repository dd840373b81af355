/**
 * The many-class fast paths give the answers of the implementations they replaced (frozen in
 * helpers/): MAD's argmax oracle (branch-and-bound greedy, inlined Gray-code walk, prefix-sum
 * degenerate case), MAD's KL line search and largest-remainder rounding.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseDefense, toProbabilities, type DefenseContext, type ProbBatch } from '../../src/defenses/index.js';
import { GradientGeometry } from '../../src/defenses/mad/mad-geometry.js';
import { MadOracle } from '../../src/defenses/mad/mad-oracle.js';
import { RadixOrder } from '../../src/defenses/math/radix-order.js';
import { argmaxAt } from '../../src/defenses/math/simplex.js';
import { seededRandom } from '../helpers/random-batches.js';
import { referenceMad, referenceRounding } from './helpers/reference-defenses.js';
import { GradientGeometry as ReferenceGeometry } from './helpers/reference-mad-geometry.js';
import { MadOracle as ReferenceOracle } from './helpers/reference-mad-oracle.js';

const KINDS = ['random', 'peaked', 'flat', 'levels', 'levels-alt', 'zeros', 'onehot', 'grid'] as const;
type Kind = (typeof KINDS)[number];

/**
 * Probability rows of one kind. 'levels' rows take each class's value from a few levels chosen by
 * `pattern` ('levels-alt': other values for the same levels), so a 'levels' answer with a
 * 'levels-alt' surrogate on the same pattern repeats one (p, y) pair across many classes: exact
 * ties, which must break towards the same class as before. 'grid' rows (K ≤ 12) are multiples of
 * 1/1024 with some classes 256/1024 above others: at 2 or 3 decimals their remainders tie while
 * their probabilities differ, which exercises rounding's tie-breaks.
 */
function rows(kind: Kind, seed: number, count: number, k: number, sharpness: number, pattern: number): ProbBatch {
  const random = seededRandom(seed);
  const levels = seededRandom(pattern);
  const data = new Float32Array(count * k);
  const row = new Float64Array(k);
  for (let r = 0; r < count; r++) {
    const hot = Math.floor(random() * k);
    for (let c = 0; c < k; c++) {
      const z = 2 * random() - 1;
      switch (kind) {
        case 'random':
          row[c] = Math.exp(sharpness * z);
          break;
        case 'peaked':
          row[c] = Math.exp(12 * z);
          break;
        case 'flat':
          row[c] = 1;
          break;
        case 'levels':
          row[c] = [1, 2, 3][Math.floor(levels() * 3)];
          break;
        case 'levels-alt':
          row[c] = [3, 1, 2][Math.floor(levels() * 3)];
          break;
        case 'zeros':
          row[c] = c !== hot && random() < 0.4 ? 0 : Math.exp(sharpness * z);
          break;
        case 'onehot':
          row[c] = c === hot ? 1 : 0;
          break;
        case 'grid':
          break;
      }
    }
    if (kind === 'grid') gridRow(row, k, random);
    let sum = 0;
    for (let c = 0; c < k; c++) sum += row[c];
    for (let c = 0; c < k; c++) data[r * k + c] = row[c] / sum;
  }
  return { rows: count, cols: k, data };
}

function gridRow(row: Float64Array, k: number, random: () => number): void {
  const total = k <= 12 ? 1024 : 2 ** Math.ceil(Math.log2(5 * k + 1));
  let sum = 0;
  let raised = 0;
  for (let c = 0; c < k - 1; c++) {
    row[c] = 1 + Math.floor(random() * 4);
    if (k <= 12 && raised < 3 && random() < 0.4) {
      row[c] += 256;
      raised++;
    }
    sum += row[c];
  }
  row[k - 1] = total - sum;
}

const kArbitrary = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 2, max: 60 }) },
  { weight: 2, arbitrary: fc.integer({ min: 61, max: 300 }) },
  { weight: 1, arbitrary: fc.constantFrom(1000) },
);

const caseArbitrary = fc
  .record({
    k: kArbitrary,
    rows: fc.integer({ min: 1, max: 3 }),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    answerKind: fc.constantFrom(...KINDS),
    surrogateKind: fc.constantFrom(...KINDS, 'same' as const),
    sharpness: fc.double({ min: 0, max: 10, noNaN: true }),
    surrogateSharpness: fc.double({ min: 0, max: 10, noNaN: true }),
    norm: fc.constantFrom('l1', 'l2', 'kl'),
    budget: fc.double({ min: 1e-3, max: 1, noNaN: true }),
    // One case in five: repeated (p, y) pairs, answer and surrogate on the same level pattern.
    tied: fc.integer({ min: 0, max: 4 }).map((v) => v === 0),
  })
  .map((c) => {
    const answerKind = c.tied ? 'levels' : c.answerKind;
    const surrogateKind = c.tied ? 'levels-alt' : c.surrogateKind;
    const batch = rows(answerKind, c.seed, c.rows, c.k, c.sharpness, c.seed ^ 0x2545f491);
    const surrogate = surrogateKind === 'same' ? batch : rows(surrogateKind, c.seed ^ 0x5bd1e995, c.rows, c.k, c.surrogateSharpness, c.seed ^ 0x2545f491);
    // A fraction of the largest distance the norm allows (KL: unbounded, so up to 3 nats).
    const eps = c.budget * (c.norm === 'l1' ? 2 : c.norm === 'l2' ? Math.SQRT2 : 3);
    return { ...c, batch, ctx: { surrogateProbs: surrogate } satisfies DefenseContext, eps };
  });

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tolerance)) assert.fail(`${what}: entry ${i} is ${actual[i]}, before ${expected[i]}`);
  }
}

describe('many-class fast paths give the previous answers', () => {
  it('mad-argmax (every norm, K = 2 … 1000, ties, flat, peaked and degenerate rows) matches the previous search within 1e-6', () => {
    fc.assert(
      fc.property(caseArbitrary, ({ batch, ctx, eps, norm, k }) => {
        const fast = parseDefense(`mad-argmax:eps=${eps},norm=${norm}`).apply(batch, ctx).data;
        const before = referenceMad(toProbabilities(batch), ctx, { eps, norm, oracle: 'argmax' });
        assertClose(fast, before, 1e-6, `K ${k} ${norm} eps ${eps}`);
      }),
      { numRuns: 300 },
    );
  });

  it('mad with the extreme oracle (the KL line search with one logarithm for the off-target mass) matches within 1e-6', () => {
    fc.assert(
      fc.property(caseArbitrary, ({ batch, ctx, eps, norm, k }) => {
        const fast = parseDefense(`mad:eps=${eps},norm=${norm}`).apply(batch, ctx).data;
        const before = referenceMad(toProbabilities(batch), ctx, { eps, norm, oracle: 'extreme' });
        assertClose(fast, before, 1e-6, `K ${k} ${norm} eps ${eps}`);
      }),
      { numRuns: 200 },
    );
  });

  it('the branch-and-bound greedy picks the same class as scoring every class at each step, from K = 2', () => {
    fc.assert(
      fc.property(caseArbitrary, ({ batch, ctx, k }) => {
        const p = toProbabilities(ctx.surrogateProbs).data;
        const y = toProbabilities(batch).data;
        const geometry = new GradientGeometry(k);
        const referenceGeometry = new ReferenceGeometry(k);
        const oracle = new MadOracle(k);
        const reference = new ReferenceOracle(k);
        const fast = new Float64Array(k);
        const before = new Float64Array(k);
        for (let r = 0; r < batch.rows; r++) {
          const t = argmaxAt(y, r * k, k);
          geometry.setLastLayer(p, r * k, y, r * k);
          referenceGeometry.setLastLayer(p, r * k, y, r * k);
          // The private searches themselves: solve() sends small K and degenerate rows elsewhere.
          // biome-ignore lint/complexity/useLiteralKeys: private member, reached on purpose
          oracle['fastGreedy'](geometry, t, fast);
          // biome-ignore lint/complexity/useLiteralKeys: private member, reached on purpose
          reference['greedy'](referenceGeometry, t, before);
          assert.deepEqual(fast, before, `K ${k} row ${r}`);
          // Every step up to where the search stopped, ties included, not just the best prefix.
          // biome-ignore lint/complexity/useLiteralKeys: private member, reached on purpose
          const entered = oracle['lastLayerGreedy']!.entered;
          // biome-ignore lint/complexity/useLiteralKeys: private members, reached on purpose
          assert.deepEqual(oracle['order'].subarray(0, entered), reference['order'].subarray(0, entered), `K ${k} row ${r}: order`);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('mad-argmax with Gram matrices (the generic searches) is unchanged', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 30 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.double({ min: 0.01, max: 2, noNaN: true }), (k, seed, eps) => {
        const random = seededRandom(seed);
        const g = Array.from({ length: k }, () => Array.from({ length: 6 }, () => 2 * random() - 1));
        const gram = new Float64Array(k * k);
        for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) gram[i * k + j] = g[i].reduce((s, x, d) => s + x * g[j][d], 0);
        const batch = rows('random', seed, 1, k, 4, seed);
        const fast = parseDefense(`mad-argmax:eps=${eps},jacobian=full`).apply(batch, { gram }).data;
        const before = referenceMad(toProbabilities(batch), { gram }, { eps, norm: 'l1', oracle: 'argmax', jacobian: 'full' });
        assertClose(fast, before, 1e-6, `K ${k}`);
      }),
      { numRuns: 60 },
    );
  });

  it('the radix order is the comparator sort by (value, index), ascending or descending', () => {
    const value = fc.oneof(fc.constantFrom(0, -0, 0.25, 1e-30, -1), fc.float({ noNaN: true, noDefaultInfinity: true }));
    fc.assert(
      fc.property(fc.array(value, { maxLength: 600 }), fc.boolean(), (values, descending) => {
        const data = Float32Array.from(values);
        const index = Int32Array.from(data.keys());
        new RadixOrder(data.length).sort(index, data.length, data, 0, descending);
        const expected = Array.from(data.keys()).sort((a, b) => (descending ? data[b] - data[a] : data[a] - data[b]) || a - b);
        assert.deepEqual(Array.from(index), expected);
      }),
      { numRuns: 200 },
    );
  });

  it('rounding (selection instead of a sort) gives exactly the previous rows', () => {
    fc.assert(
      fc.property(
        kArbitrary,
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.constantFrom(...KINDS),
        fc.double({ min: 0, max: 12, noNaN: true }),
        fc.integer({ min: 0, max: 6 }),
        (k, count, seed, kind, sharpness, decimals) => {
          const batch = rows(kind, seed, count, k, sharpness, seed);
          const fast = parseDefense(`rounding:decimals=${decimals}`).apply(batch).data;
          assert.deepEqual(fast, referenceRounding(toProbabilities(batch), decimals), `K ${k} ${kind} decimals ${decimals}`);
        },
      ),
      { numRuns: 400 },
    );
  });
});
