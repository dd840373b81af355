import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { confidenceInterval, mean, sampleSd, tCdf, tQuantile, welchTest } from '../../../src/eval/records/stats.js';

const close = (actual: number, expected: number, tolerance: number, what: string) =>
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} vs ${expected}`);

describe('statistics for seeded runs', () => {
  it('Student t quantiles match the printed tables', () => {
    // t(0.975, df) from any statistics table.
    for (const [df, t] of [
      [1, 12.706],
      [2, 4.303],
      [3, 3.182],
      [4, 2.776],
      [9, 2.262],
      [30, 2.042],
    ])
      close(tQuantile(0.975, df), t, 5e-4, `t(0.975, ${df})`);
    close(tQuantile(0.975, 1e6), 1.95996, 1e-4, 'large df → normal');
    close(tCdf(0, 3), 0.5, 1e-12, 'median');
    // df = 1 is the Cauchy distribution: P(T ≤ 1) = 3/4.
    close(tCdf(1, 1), 0.75, 1e-9, 'Cauchy');
  });

  it('the 95% interval of three seeds, by hand', () => {
    // mean 0.6, sd 0.1, half-width t(0.975, 2)·0.1/√3 = 4.302653·0.057735 = 0.248414.
    const ci = confidenceInterval([0.5, 0.6, 0.7]);
    close(ci.mean, 0.6, 1e-12, 'mean');
    close(ci.sd, 0.1, 1e-12, 'sd');
    close(ci.halfWidth!, 0.248414, 1e-5, 'half-width');
    assert.equal(confidenceInterval([0.42]).halfWidth, undefined, 'one value has no interval');
    assert.equal(confidenceInterval([0.3, 0.3, 0.3]).halfWidth, 0);
  });

  it("Welch's t-test, by hand", () => {
    // a: mean 2.5, s²/n = 1.6667/4; b: mean 6, s²/n = 10/5. t = −3.5/√2.41667 = −2.2514;
    // df = 2.41667² / ((0.41667²)/3 + 2²/4) = 5.5208; two-sided p ≈ 0.0691.
    const result = welchTest([1, 2, 3, 4], [2, 4, 6, 8, 10])!;
    close(result.t, -2.2514, 1e-4, 't');
    close(result.df, 5.5208, 1e-4, 'df');
    close(result.p, 0.0691, 5e-4, 'p');
    assert.equal(welchTest([1], [2, 3]), undefined);
    assert.equal(welchTest([1, 1], [1, 1])!.p, 1);
  });

  it('properties: the interval is t·sd/√n around the mean, and the test is symmetric with p in [0, 1]', () => {
    const sample = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 2, maxLength: 12 });
    fc.assert(
      fc.property(sample, sample, (a, b) => {
        const ci = confidenceInterval(a);
        assert.ok(ci.halfWidth! >= 0);
        close(ci.mean, mean(a), 1e-12, 'mean');
        close(ci.halfWidth!, tQuantile(0.975, a.length - 1) * (sampleSd(a) / Math.sqrt(a.length)), 1e-9, 'half-width');
        const ab = welchTest(a, b)!;
        const ba = welchTest(b, a)!;
        close(ab.p, ba.p, 1e-9, 'symmetric p');
        assert.ok(ab.p >= 0 && ab.p <= 1);
      }),
      { numRuns: 100 },
    );
  });
});
