import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createClientDetection, resolveOptions } from '../../src/detection/index.js';
import { decodeFloat32, decodeUint16 } from '../../src/detection/encoding.js';
import { initialPradaState, pooledTest, updatePrada, type PradaConfig, type PradaState } from '../../src/detection/prada.js';
import { projectRow } from '../../src/detection/math/projection.js';
import { jbdaQueries, naturalQueries, observationOf } from './synthetic.js';

const config: PradaConfig = { ...resolveOptions().prada, dims: 4 };

/** Feeds 2-D points (narrower than dims: kept exactly) one at a time. */
function feed(state: PradaState, points: [number, number, number][], cfg = config): PradaState {
  for (const [x, y, label] of points) state = updatePrada(cfg, state, { rows: 1, cols: 2, data: Float32Array.of(x, y) }, [label]);
  return state;
}

const points = (s: PradaState, c: number) => Array.from(decodeFloat32(s.classes[c].g));

describe('PRADA bookkeeping', () => {
  it('keeps, records and thresholds a hand-made sequence', () => {
    let s = feed(initialPradaState(config), [[0, 0, 0]]);
    // The first query of a class is kept with no distance; T = 0.
    assert.deepEqual(points(s, 0), [0, 0]);
    assert.equal(s.len, 0);
    assert.equal(s.classes[0].t, 0);
    // (3, 4): d = 5 > 0, kept; kept distances {5}: mean 5, std 0, T = 5.
    s = feed(s, [[3, 4, 0]]);
    assert.equal(s.classes[0].count, 2);
    assert.equal(s.classes[0].t, 5);
    // (3, 5): d = 1 to (3, 4) ≤ 5, recorded but not kept.
    s = feed(s, [[3, 5, 0]]);
    assert.equal(s.classes[0].count, 2);
    assert.deepEqual(Array.from(decodeFloat32(s.d).subarray(0, s.len)), [5, 1]);
    // (10, 0): d = min(10, √65) = √65 > 5, kept; kept distances {5, √65}: mean − std = 5, so T stays 5.
    s = feed(s, [[10, 0, 0]]);
    assert.equal(s.classes[0].count, 3);
    assert.ok(Math.abs(decodeFloat32(s.d)[2] - Math.sqrt(65)) < 1e-5);
    assert.ok(Math.abs(s.classes[0].t - 5) < 1e-9);
    assert.ok(Math.abs(s.classes[0].s - (5 + Math.sqrt(65))) < 1e-5);
    // Another class starts its own set: no distance to class 0's points.
    s = feed(s, [[0, 0, 1]]);
    assert.equal(s.len, 3);
    assert.deepEqual(points(s, 1), [0, 0]);
    assert.deepEqual(Array.from(decodeUint16(s.dc).subarray(0, 3)), [0, 0, 0]);
    assert.equal(s.n, 5);
  });

  it('the threshold rises to mean − std of the kept distances', () => {
    // Kept distances 1 (from (1,0)), then 10 (from (11,0)): mean 5.5, std 4.5, T = max(1, 1) = 1;
    // then (31, 0): d = 20 > 1, kept; {1, 10, 20}: mean 31/3, std √(Σd²/3 − mean²).
    const s = feed(initialPradaState(config), [
      [0, 0, 0],
      [1, 0, 0],
      [11, 0, 0],
      [31, 0, 0],
    ]);
    const mean = 31 / 3;
    const std = Math.sqrt((1 + 100 + 400) / 3 - mean * mean);
    assert.ok(Math.abs(s.classes[0].t - Math.max(1, mean - std)) < 1e-9);
    assert.equal(s.classes[0].count, 4);
  });

  it('evicts the oldest kept point at the per-class cap, and from the largest class at the total cap', () => {
    const capped = { ...config, maxKeptPerClass: 2 };
    let s = feed(
      initialPradaState(capped),
      [
        [0, 0, 0],
        [3, 4, 0],
        [10, 0, 0],
      ],
      capped,
    );
    assert.deepEqual(points(s, 0), [3, 4, 10, 0]);
    // The evicted (0, 0) no longer counts: (0, 1) is √(9+9) = √18 from (3, 4), not 1 from (0, 0).
    s = feed(s, [[0, 1, 0]], capped);
    assert.ok(Math.abs(decodeFloat32(s.d)[s.len - 1] - Math.sqrt(18)) < 1e-5);

    const total = { ...config, maxKeptPoints: 3 };
    s = feed(
      initialPradaState(total),
      [
        [0, 0, 0],
        [5, 0, 0],
        [0, 0, 1],
        [0, 9, 1],
      ],
      total,
    );
    // Four kept, cap 3: class 0 and 1 hold two each; the tie goes to class 0, whose oldest goes.
    assert.deepEqual(points(s, 0), [5, 0]);
    assert.deepEqual(points(s, 1), [0, 0, 0, 9]);
  });

  it('the distance ring keeps the last maxDistances, in order from head', () => {
    const small = { ...config, maxDistances: 20 };
    const seq: [number, number, number][] = Array.from({ length: 31 }, (_, i) => [i, 0, 0]);
    const s = feed(initialPradaState(small), seq, small);
    const full = feed(initialPradaState(config), seq);
    assert.equal(s.len, 20);
    assert.equal(full.len, 30);
    const ring = decodeFloat32(s.d);
    const unrolled = Array.from({ length: 20 }, (_, i) => ring[(s.head + i) % 20]);
    assert.deepEqual(unrolled, Array.from(decodeFloat32(full.d).subarray(10, 30)));
    // On a line at unit steps, the kept points are every other one: distances 1 and 2 alternate.
    assert.deepEqual(new Set(unrolled), new Set([1, 2]));
  });

  it('pools classes with enough distances, drops 3σ outliers, and tests only above minPooled', () => {
    const pool = Float32Array.from({ length: 120 }, (_, i) => 1 + (i % 7) * 0.1);
    const labels = new Uint16Array(120);
    labels[0] = 5; // class 5 has one distance: left out of the pool
    assert.equal(pooledTest({ minDistancesPerClass: 10, minPooled: 100 }, pool, labels, 120)!.pooled, 119);
    pool[1] = 1000; // a 3σ outlier
    assert.equal(pooledTest({ minDistancesPerClass: 10, minPooled: 100 }, pool, labels, 120)!.pooled, 118);
    assert.equal(pooledTest({ minDistancesPerClass: 10, minPooled: 118 }, pool, labels, 120), undefined);
  });

  it('skips rows whose inputs are not finite or overflow the float32 copies', () => {
    let s = feed(initialPradaState(config), [[0, 0, 0]]);
    s = updatePrada(config, s, { rows: 2, cols: 2, data: Float32Array.of(Number.NaN, 0, 3e38, 3e38) }, [0, 0]);
    assert.equal(s.n, 1);
    assert.equal(s.len, 0);
    assert.ok(!JSON.stringify(s).includes('null'));
    // 100 values of 3e38 summed into 4 float32 buckets overflow.
    const wide = { rows: 1, cols: 100, data: new Float32Array(100).fill(3e38) };
    const fresh = updatePrada(config, initialPradaState(config), wide, [1]);
    assert.equal(fresh.n, 0);
    assert.deepEqual(fresh.classes, {});
  });

  it('count-sketches wide rows the same way every time and keeps narrow ones exactly', () => {
    const row = Float32Array.from({ length: 784 }, (_, i) => Math.sin(i));
    assert.deepEqual(projectRow(row, 32, 7), projectRow(row, 32, 7));
    assert.notDeepEqual(projectRow(row, 32, 7), projectRow(row, 32, 8));
    assert.deepEqual(Array.from(projectRow(Float32Array.of(1, 2), 32, 7)), [1, 2]);
  });
});

describe('PRADA on query streams', () => {
  const detection = createClientDetection({ budget: false, ood: { enabled: false } });
  const run = (queries: ReturnType<typeof naturalQueries>) => {
    let state = detection.initialState(0);
    let firstFlag = -1;
    let lowest = 1;
    queries.forEach((q, i) => {
      const { state: next, assessment } = detection.observe(state, observationOf(q, i * 1000));
      state = next;
      const prada = assessment.verdicts.find((v) => v.detector === 'prada')!;
      if (prada.evidence.w !== undefined) lowest = Math.min(lowest, prada.evidence.w);
      if (prada.flagged && firstFlag < 0) firstFlag = i + 1;
    });
    return { firstFlag, lowest };
  };

  it('flags a JBDA-like stream (seeds + small sign steps) within 500 queries', () => {
    for (const seed of [2, 3]) {
      const { firstFlag, lowest } = run(jbdaQueries(seed, 500));
      assert.ok(firstFlag > 0 && firstFlag <= 500, `seed ${seed}: first flag at ${firstFlag}, lowest W ${lowest}`);
    }
  });

  it('does not flag i.i.d. natural-like streams', () => {
    for (const seed of [1, 4]) {
      const { firstFlag, lowest } = run(naturalQueries(seed, 1200));
      assert.equal(firstFlag, -1, `seed ${seed}: flagged, lowest W ${lowest}`);
      assert.ok(lowest > 0.96, `seed ${seed}: lowest W ${lowest}`);
    }
  });
});
