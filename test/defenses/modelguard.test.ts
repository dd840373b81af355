import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DefenseSpecError, parseDefense, rowDistance, type ProbBatch } from '../../src/defenses/index.js';
import { Quantizer, RESOLUTIONS } from '../../src/defenses/modelguard/modelguard-s.js';
import { MODELGUARD_LOG_OFFSET, ModelGuardW } from '../../src/defenses/modelguard/modelguard-w.js';
import { argmax, randomBatch, rowOf } from '../helpers/random-batches.js';
import { vertexOptimum } from './helpers/lp-vertices.js';

/** A float32 probability row from raw weights, and the float64 row the solver works on (scaled to sum exactly 1). */
function rowFrom(weights: readonly number[]): { y32: Float32Array; y: number[] } {
  const total = weights.reduce((s, v) => s + v, 0);
  const y32 = Float32Array.from(weights, (v) => v / total);
  const sum32 = y32.reduce((s, v) => s + v, 0);
  return { y32, y: Array.from(y32, (v) => v / sum32) };
}

const costs = (y: readonly number[]): number[] => y.map((v) => Math.log(v + MODELGUARD_LOG_OFFSET));
const dot = (a: readonly number[], b: ArrayLike<number>): number => a.reduce((s, v, i) => s + v * b[i], 0);
const l1 = (a: ArrayLike<number>, b: ArrayLike<number>): number => Array.from(a).reduce((s, v, i) => s + Math.abs(v - b[i]), 0);

/** Weights with exact zeros and exact ties mixed in (where log 0 and tie-breaking matter). */
const weightsArbitrary = (minK: number, maxK: number) =>
  fc
    .integer({ min: minK, max: maxK })
    .chain((k) =>
      fc
        .array(fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 0.001, max: 50, noNaN: true })), { minLength: k, maxLength: k })
        .filter((w) => w.some((v) => v > 0)),
    );

/** Checks the solver's float64 answer: on the simplex, inside the L1 ball, top-1 kept (ties allowed: the LP's closure). */
function assertFeasible(x: Float64Array, y: readonly number[], eps: number, top1: number): void {
  const sum = x.reduce((s, v) => s + v, 0);
  assert.ok(Math.abs(sum - 1) <= 1e-9, `sums to ${sum}`);
  x.forEach((v, i) => {
    assert.ok(v >= -1e-12, `entry ${i} is ${v}`);
  });
  const distance = l1(x, y);
  assert.ok(distance <= eps + 1e-9, `L1 ${distance} > ${eps}`);
  x.forEach((v, i) => {
    assert.ok(v <= x[top1] + 1e-12, `entry ${i} (${v}) above the top class ${top1} (${x[top1]})`);
  });
}

function solveW(y32: Float32Array, eps: number): { x: Float64Array; objective: number; top1: number } {
  const x = new Float64Array(y32.length);
  const { objective, top1 } = new ModelGuardW(y32.length).solve(y32, 0, eps, x);
  return { x, objective, top1 };
}

function assertOnSimplex(batch: ProbBatch): void {
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

const batchArbitrary = fc
  .record({
    k: fc.oneof(fc.integer({ min: 2, max: 12 }), fc.integer({ min: 13, max: 60 }), fc.constantFrom(100, 1000)),
    rows: fc.integer({ min: 1, max: 4 }),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    sharpness: fc.double({ min: 0, max: 12, noNaN: true }),
    zeros: fc.boolean(),
  })
  .map(({ k, rows, seed, sharpness, zeros }) => randomBatch(seed, rows, k, sharpness, zeros));

describe('ModelGuard-W: the exact solution of its linear program', () => {
  it('reaches the optimum of a brute-force vertex enumeration (K = 2 … 5, zeros and ties included)', () => {
    fc.assert(
      fc.property(weightsArbitrary(2, 5), fc.double({ min: 1e-4, max: 2, noNaN: true }), (weights, eps) => {
        const { y32, y } = rowFrom(weights);
        const { x, objective, top1 } = solveW(y32, eps);
        assert.equal(top1, argmax(y32));
        const reference = vertexOptimum(costs(y), y, eps, top1);
        assert.ok(Math.abs(objective - reference.value) <= 1e-9, `objective ${objective} vs brute force ${reference.value} (${reference.x})`);
        assert.ok(Math.abs(dot(costs(y), x) - objective) <= 1e-9, 'the returned objective is that of the returned row');
        assertFeasible(x, y, eps, top1);
      }),
      { numRuns: 120 },
    );
  });

  const fixed: [string, number[], number][] = [
    ['a tie at the top', [0.4, 0.4, 0.2], 0.5],
    ['a tie at the top, the whole budget', [0.5, 0.5, 0], 2],
    ['a label (one-hot)', [0, 1, 0, 0], 0.7],
    ['the uniform row', [1, 1, 1, 1, 1], 1.2],
    ['several zeros', [0.6, 0, 0.3, 0, 0.1], 0.3],
    ['a tiny budget', [0.35, 0.3, 0.2, 0.15], 1e-6],
  ];
  for (const [name, weights, eps] of fixed) {
    it(`matches the brute force on ${name}`, () => {
      const { y32, y } = rowFrom(weights);
      const { x, objective, top1 } = solveW(y32, eps);
      const reference = vertexOptimum(costs(y), y, eps, top1);
      assert.ok(Math.abs(objective - reference.value) <= 1e-9, `objective ${objective} vs brute force ${reference.value}`);
      assertFeasible(x, y, eps, top1);
    });
  }

  it('K = 6 … 60: a larger budget never gives a worse objective, and none is worse than the answer itself', () => {
    fc.assert(
      fc.property(
        weightsArbitrary(6, 60),
        fc.double({ min: 0.01, max: 1.9, noNaN: true }),
        fc.double({ min: 0, max: 0.1, noNaN: true }),
        (weights, eps, extra) => {
          const { y32, y } = rowFrom(weights);
          const small = solveW(y32, eps);
          const large = solveW(y32, eps + extra);
          assert.ok(large.objective <= small.objective + 1e-12, `ε ${eps + extra} gives ${large.objective} > ${small.objective} at ε ${eps}`);
          assert.ok(small.objective <= dot(costs(y), y) + 1e-12, 'worse than the answer itself');
          assertFeasible(small.x, y, eps, small.top1);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('log 0: classes without mass are the cheapest, filled lowest index first', () => {
    const { y32 } = rowFrom([0.7, 0.3, 0, 0]);
    const { x } = solveW(y32, 0.2);
    const expected = [0.6, 0.3, 0.1, 0];
    x.forEach((v, i) => {
      assert.ok(Math.abs(v - expected[i]) <= 1e-7, `entry ${i}: ${v} vs ${expected[i]}`);
    });
  });

  it('with the whole budget, answers the uniform row on the top class and the least likely classes', () => {
    // Minimising Σ ỹ log y over the top-1-keeping simplex: the best "uniform over t and the r least likely".
    // Here t with the single least likely class beats t with the two least likely: (log 0.6 + log 0.001)/2 < (… + log 0.099)/3.
    const { y32 } = rowFrom([0.3, 0.6, 0.001, 0.099]);
    const { x } = solveW(y32, 2);
    const expected = [0, 0.5, 0.5, 0];
    x.forEach((v, i) => {
      assert.ok(Math.abs(v - expected[i]) <= 1e-7, `entry ${i}: ${v} vs ${expected[i]}`);
    });
  });

  it('as a defense: on the simplex, within ε in L1 (float32), a strict top-1 kept, the same answer twice', () => {
    for (const eps of [0.05, 0.5, 1.5]) {
      const defense = parseDefense(`modelguard-w:eps=${eps}`);
      assert.equal(defense.keepsTop1, true);
      assert.deepEqual(defense.needs, []);
      fc.assert(
        fc.property(batchArbitrary, (batch) => {
          const out = defense.apply(batch);
          assertOnSimplex(out);
          for (let r = 0; r < batch.rows; r++) {
            const d = rowDistance('l1', batch.data, r * batch.cols, out.data, r * batch.cols, batch.cols);
            assert.ok(d <= eps + 1e-6, `row ${r}: L1 ${d} > ${eps}`);
            assert.equal(argmax(rowOf(out, r)), argmax(rowOf(batch, r)), `row ${r} changed its top-1`);
          }
          assert.deepEqual(defense.apply(batch).data, out.data);
        }),
        { numRuns: 30 },
      );
    }
  });
});

describe('ModelGuard-S: quantisation to the coarsest codeword within ε', () => {
  for (const [norm, eps] of [
    ['l1', 0.3],
    ['l1', 1],
    ['l2', 0.2],
  ] as const) {
    it(`${norm} ε = ${eps}: on the simplex, within ε, top-1 kept, deterministic across instances`, () => {
      const defense = parseDefense(`modelguard-s:eps=${eps},norm=${norm}`);
      const again = parseDefense(`modelguard-s:eps=${eps},norm=${norm}`);
      assert.equal(defense.keepsTop1, true);
      assert.deepEqual(defense.needs, []);
      fc.assert(
        fc.property(batchArbitrary, (batch) => {
          const out = defense.apply(batch);
          assertOnSimplex(out);
          for (let r = 0; r < batch.rows; r++) {
            const d = rowDistance(norm, batch.data, r * batch.cols, out.data, r * batch.cols, batch.cols);
            assert.ok(d <= eps + 1e-6, `row ${r}: ${norm} ${d} > ${eps}`);
            assert.equal(argmax(rowOf(out, r)), argmax(rowOf(batch, r)), `row ${r} changed its top-1`);
          }
          // No secret: another instance (another worker, another process) gives the same answers.
          assert.deepEqual(again.apply(batch).data, out.data);
        }),
        { numRuns: 30 },
      );
    });
  }

  it('returns codewords: entries are multiples of 1/N for an N of the ladder, and a confident answer becomes its label', () => {
    const quantizer = new Quantizer(5);
    const out = new Float64Array(5);
    assert.equal(quantizer.quantize([0.02, 0.9, 0.03, 0.04, 0.01], 0, 0.25, 'l1', out), 1);
    assert.deepEqual(Array.from(out), [0, 1, 0, 0, 0]);
    const batch = randomBatch(7, 50, 5, 3);
    for (let r = 0; r < batch.rows; r++) {
      const n = quantizer.quantize(batch.data, r * 5, 0.4, 'l1', out);
      assert.ok(RESOLUTIONS.includes(n), `resolution ${n}`);
      out.forEach((v) => {
        assert.ok(Math.abs(v * n - Math.round(v * n)) <= 1e-9, `${v} is not a multiple of 1/${n}`);
      });
    }
  });

  it('many answers share a codeword: nearby answers get the same one', () => {
    const defense = parseDefense('modelguard-s:eps=0.4');
    const base = [0.55, 0.25, 0.1, 0.06, 0.04];
    const rows: number[][] = [];
    for (let i = 0; i < 200; i++) {
      const jitter = base.map((v, c) => v * (1 + 0.02 * Math.sin(17 * i + 5 * c)));
      const s = jitter.reduce((a, b) => a + b, 0);
      rows.push(jitter.map((v) => v / s));
    }
    const out = defense.apply({ rows: rows.length, cols: 5, data: Float32Array.from(rows.flat()) });
    const distinct = new Set(Array.from({ length: out.rows }, (_, r) => rowOf(out, r).join(',')));
    assert.ok(distinct.size <= 3, `${distinct.size} distinct answers for 200 nearby inputs`);
  });

  it('a larger ε never picks a finer resolution (the first codeword within ε, coarse to fine)', () => {
    fc.assert(
      fc.property(
        weightsArbitrary(2, 30),
        fc.double({ min: 0.001, max: 1.5, noNaN: true }),
        fc.double({ min: 0, max: 0.5, noNaN: true }),
        (weights, eps, extra) => {
          const { y32 } = rowFrom(weights);
          const quantizer = new Quantizer(y32.length);
          const out = new Float64Array(y32.length);
          const fine = quantizer.quantize(y32, 0, eps, 'l1', out);
          const coarse = quantizer.quantize(y32, 0, eps + extra, 'l1', out);
          if (fine !== 0) assert.ok(coarse !== 0 && coarse <= fine, `ε ${eps + extra}: N = ${coarse}, ε ${eps}: N = ${fine}`);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('returns the answer itself when no codeword is close enough', () => {
    const y = Float32Array.from([0.3141, 0.2718, 0.2, 0.2141]);
    const out = parseDefense('modelguard-s:eps=1e-9').apply({ rows: 1, cols: 4, data: y });
    out.data.forEach((v, i) => {
      assert.ok(Math.abs(v - y[i]) <= 1e-7);
    });
  });
});

describe('ModelGuard specs', () => {
  const bad: [string, RegExp][] = [
    ['modelguard-w:eps=0', /modelguard-w: parameter "eps" must be a number > 0 and <= 2, got "0"/],
    ['modelguard-w:eps=2.5', /modelguard-w: parameter "eps" must be a number > 0 and <= 2, got "2.5"/],
    ['modelguard-w:norm=l2', /modelguard-w: unknown parameter "norm"; allowed: eps \(a number > 0 and <= 2\)/],
    ['modelguard-s:eps=abc', /modelguard-s: parameter "eps" must be a number > 0, got "abc"/],
    ['modelguard-s:eps=1.5,norm=l2', /modelguard-s: eps=1.5 exceeds the largest possible l2 distance between two probability vectors \(1\.4142\)/],
    ['modelguard-s:norm=kl', /modelguard-s: parameter "norm" must be one of l1 \| l2, got "kl"/],
  ];
  for (const [spec, message] of bad) {
    it(`rejects ${spec}`, () =>
      assert.throws(
        () => parseDefense(spec),
        (e: unknown) => e instanceof DefenseSpecError && message.test((e as Error).message),
      ));
  }

  it('spells out every parameter in the canonical spec', () => {
    assert.equal(parseDefense('modelguard-w').spec, 'modelguard-w:eps=0.5');
    assert.equal(parseDefense('modelguard-s:eps=0.3').spec, 'modelguard-s:eps=0.3,norm=l1');
    assert.equal(parseDefense({ name: 'modelguard-s', eps: 0.2, norm: 'l2' }).spec, 'modelguard-s:eps=0.2,norm=l2');
    assert.equal(parseDefense('modelguard-w:eps=0.4|modelguard-s:eps=0.4').keepsTop1, true);
  });
});
