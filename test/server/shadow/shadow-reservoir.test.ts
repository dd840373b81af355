/**
 * The shadow's reservoir: bounded whatever the stream, and a uniform sample of it (each of n rows
 * offered is held with probability capacity / n, whatever its place in the stream); the share of
 * requests drawn is the configured one. Fixed seeds: the chi-square bounds are checked on one
 * reproducible run, not on luck.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createServingMetrics } from '../../../src/server/metrics.js';
import { seededRandom } from '../../../src/server/shadow/random.js';
import { Reservoir } from '../../../src/server/shadow/reservoir.js';
import { createShadowAttacker, resolveShadowOptions } from '../../../src/server/shadow/index.js';

/** Offers rows 0..n−1 (each row's one feature is its index); returns the indices held. */
function heldIndices(reservoir: Reservoir, n: number): number[] {
  const x = new Float32Array(1);
  const probs = new Float32Array([0.5, 0.5]);
  for (let i = 0; i < n; i++) {
    x[0] = i;
    reservoir.offer(x, probs, probs, 0);
  }
  return Array.from(reservoir.snapshot().x);
}

/** Upper 0.999 quantile of chi-square with `df` degrees of freedom (Wilson–Hilferty). */
function chiSquareBound(df: number): number {
  const z = 3.09;
  return df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
}

describe('shadow reservoir', () => {
  it('never holds more than its capacity, holds each offered row at most once, and grows its arrays only up to the bound', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (capacity, n, seed) => {
        const reservoir = new Reservoir(capacity, 1, 2, seededRandom(seed));
        const held = heldIndices(reservoir, n);
        assert.equal(reservoir.seen, n);
        assert.equal(reservoir.size, Math.min(capacity, n));
        assert.equal(held.length, Math.min(capacity, n));
        assert.equal(new Set(held).size, held.length, 'a row held twice');
        for (const i of held) assert.ok(Number.isInteger(i) && i >= 0 && i < n);
        // 1 feature + 2 × 2 classes, 4 bytes each, per row of capacity at most.
        assert.ok(reservoir.bytes <= Math.max(capacity, 64) * 5 * 4, `${reservoir.bytes} bytes`);
      }),
      { seed: 42, numRuns: 200 },
    );
  });

  it('keeps the rows it holds intact: inputs and both answers of one row stay together', () => {
    const reservoir = new Reservoir(50, 3, 2, seededRandom(7));
    for (let i = 0; i < 1000; i++)
      reservoir.offer(Float32Array.of(i, i + 0.5, -i), Float32Array.of(i / 1000, 1 - i / 1000), Float32Array.of(1 - i / 1000, i / 1000), 0);
    const snap = reservoir.snapshot();
    for (let r = 0; r < snap.rows; r++) {
      const i = snap.x[r * 3];
      assert.equal(snap.x[r * 3 + 1], i + 0.5);
      assert.equal(snap.x[r * 3 + 2], -i);
      assert.equal(snap.original[r * 2], Math.fround(i / 1000));
      assert.equal(snap.defended[r * 2 + 1], Math.fround(i / 1000));
    }
  });

  it('is a uniform sample of the stream: every position held about equally often (chi-square, fixed seed)', () => {
    const n = 200;
    const capacity = 20;
    const trials = 3000;
    const counts = new Float64Array(n);
    const random = seededRandom(12345);
    for (let t = 0; t < trials; t++) {
      for (const i of heldIndices(new Reservoir(capacity, 1, 2, random), n)) counts[i] += 1;
    }
    const expected = (trials * capacity) / n;
    const chi = counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
    // Inclusion is not independent across cells (exactly `capacity` per trial), which only lowers the statistic.
    assert.ok(chi < chiSquareBound(n - 1), `chi-square ${chi.toFixed(1)} over ${n - 1} df (bound ${chiSquareBound(n - 1).toFixed(1)})`);
    // Early and late rows alike: the first and the last quarter of the stream are held as often.
    const quarter = (from: number) => counts.slice(from, from + n / 4).reduce((a, b) => a + b, 0);
    const ratio = quarter(0) / quarter((3 * n) / 4);
    assert.ok(ratio > 0.93 && ratio < 1.07, `first/last quarter ${ratio.toFixed(3)}`);
  });

  it('draws the configured share of requests (binomial bound, fixed seed)', () => {
    const features = 2;
    const shadow = createShadowAttacker(
      resolveShadowOptions({ heldOut: { x: new Float32Array(2 * features), labels: [0, 1] }, sample: 0.1, seed: 3, every: '1h' }),
      {
        metrics: createServingMetrics(),
        tiers: [],
      },
    );
    const draws = 20_000;
    let drawn = 0;
    for (let i = 0; i < draws; i++) if (shadow.draw()) drawn++;
    const sd = Math.sqrt(draws * 0.1 * 0.9);
    assert.ok(Math.abs(drawn - draws * 0.1) < 4 * sd, `${drawn} of ${draws} drawn`);
    void shadow.close();
  });

  it('holds at most its capacity per tier however many requests are offered, with the held-back share apart', () => {
    const features = 4;
    const shadow = createShadowAttacker(
      resolveShadowOptions({ heldOut: { x: new Float32Array(2 * features), labels: [0, 1] }, sample: 1, capacity: 100, holdBack: 0.2, seed: 5, every: '1h' }),
      {
        metrics: createServingMetrics(),
        tiers: ['strict'],
      },
    );
    const probs = { rows: 8, cols: 2, data: new Float32Array(16).fill(0.5) };
    for (let i = 0; i < 500; i++) {
      shadow.offer({
        tier: i % 2 ? 'default' : 'strict',
        original: probs,
        defended: probs,
        inputs: { rows: 8, cols: features, data: new Float32Array(8 * features).fill(i / 500) },
      });
    }
    const held = shadow.held();
    assert.deepEqual(Object.keys(held).sort(), ['default', 'strict']);
    for (const { train, back } of Object.values(held)) {
      assert.equal(train, 100);
      assert.equal(back, 25);
    }
    void shadow.close();
  });
});
