import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseDefense, rowDistance, type DefenseContext, type ProbBatch } from '../../src/defenses/index.js';
import { argmax, randomBatch, rowOf } from '../helpers/random-batches.js';

/** A random batch shape: K from 2 to 1000 (small K more often), a few rows, sharp or flat, with or without exact zeros. */
const batchArbitrary = fc
  .record({
    k: fc.oneof(fc.integer({ min: 2, max: 12 }), fc.integer({ min: 13, max: 60 }), fc.constantFrom(100, 1000)),
    rows: fc.integer({ min: 1, max: 4 }),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    sharpness: fc.double({ min: 0, max: 12, noNaN: true }),
    zeros: fc.boolean(),
  })
  .map(({ k, rows, seed, sharpness, zeros }) => ({
    batch: randomBatch(seed, rows, k, sharpness, zeros),
    ctx: {
      surrogateProbs: randomBatch(seed ^ 0x5bd1e995, rows, k, 2),
      misinformationProbs: randomBatch(seed ^ 0x1b873593, rows, k, 5),
      inputKeys: Array.from({ length: rows }, (_, r) => `input-${seed}-${r}`),
    } satisfies DefenseContext,
  }));

const SPECS = [
  'none',
  'topk:k=3,renormalize=true',
  'rounding:decimals=2',
  'argmax',
  'noise:scale=1.5',
  'noise:scale=0.3,dist=laplace',
  'reverse-sigmoid:beta=0.8,gamma=0.4',
  'reverse-sigmoid:beta=30,gamma=2',
  'mad:eps=0.5',
  'mad:eps=0.3,norm=l2',
  'mad:eps=0.1,norm=kl',
  'mad-argmax:eps=1',
  'mad-argmax:eps=0.2,norm=kl',
  'misinformation:tau=0.7,nu=100',
  'mad-argmax:eps=0.5|rounding:decimals=3',
];

function onSimplex(batch: ProbBatch): void {
  for (let r = 0; r < batch.rows; r++) {
    const row = rowOf(batch, r);
    assert.ok(
      row.every((v) => Number.isFinite(v) && v >= 0),
      `row ${r} has a negative or non-finite entry`,
    );
    const sum = row.reduce((s, v) => s + v, 0);
    assert.ok(Math.abs(sum - 1) <= 1e-6, `row ${r} sums to ${sum}`);
  }
}

describe('properties of every defense over random batches (K = 2 … 1000)', () => {
  for (const spec of SPECS) {
    it(`${spec}: on the simplex, top-1 kept where promised, same answer for the same input`, () => {
      const defense = parseDefense(spec, { noiseSecret: 'property-tests' });
      fc.assert(
        fc.property(batchArbitrary, ({ batch, ctx }) => {
          const out = defense.apply(batch, ctx);
          assert.equal(out.rows, batch.rows);
          assert.equal(out.cols, batch.cols);
          onSimplex(out);
          if (defense.keepsTop1) {
            for (let r = 0; r < batch.rows; r++) assert.equal(argmax(rowOf(out, r)), argmax(rowOf(batch, r)), `row ${r} changed its top-1`);
          }
          assert.deepEqual(defense.apply(batch, ctx).data, out.data);
        }),
        { numRuns: 40 },
      );
    });
  }

  for (const [norm, eps] of [
    ['l1', 0.4],
    ['l2', 0.25],
    ['kl', 0.05],
  ] as const) {
    for (const oracle of ['extreme', 'argmax']) {
      it(`mad ${oracle} stays within its ${norm} budget of ${eps}`, () => {
        const defense = parseDefense(`mad:eps=${eps},norm=${norm},oracle=${oracle}`);
        fc.assert(
          fc.property(batchArbitrary, ({ batch, ctx }) => {
            const out = defense.apply(batch, ctx);
            for (let r = 0; r < batch.rows; r++) {
              const d = rowDistance(norm, batch.data, r * batch.cols, out.data, r * batch.cols, batch.cols);
              assert.ok(d <= eps + 1e-5, `row ${r}: ${norm} distance ${d} > ${eps}`);
            }
          }),
          { numRuns: 40 },
        );
      });
    }
  }

  it('topk without renormalisation keeps exactly k entries and never adds mass', () => {
    const defense = parseDefense('topk:k=2');
    fc.assert(
      fc.property(batchArbitrary, ({ batch }) => {
        const out = defense.apply(batch);
        for (let r = 0; r < batch.rows; r++) {
          const row = rowOf(out, r);
          const source = rowOf(batch, r);
          assert.ok(row.filter((v) => v > 0).length <= 2);
          // Rows are first put exactly on the simplex (they are accepted within 1e-3), so kept entries match to float32 rounding.
          row.forEach((v, c) =>
            assert.ok(v === 0 || Math.abs(v - source[c]) <= 1e-6 * source[c], `entry ${c}: ${v} is neither 0 nor the input's ${source[c]}`),
          );
          assert.equal(argmax(row), argmax(source));
        }
      }),
      { numRuns: 40 },
    );
  });
});
