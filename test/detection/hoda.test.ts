import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DetectionConfigError } from '../../src/detection/errors.js';
import { calibrateHoda, createClientDetection, hardnessFromLabels, hardnessHistogram, pearsonDistance, resolveOptions } from '../../src/detection/index.js';
import { rng } from './synthetic.js';

describe('HODA math', () => {
  it('hardness is the first checkpoint from which every later one gives the final label', () => {
    assert.equal(hardnessFromLabels([3, 3, 3, 3]), 0);
    assert.equal(hardnessFromLabels([1, 2, 3, 3]), 2);
    assert.equal(hardnessFromLabels([3, 1, 3, 3]), 2);
    assert.equal(hardnessFromLabels([3, 3, 3, 1]), 3);
    assert.equal(hardnessFromLabels([7]), 0);
    assert.throws(() => hardnessFromLabels([]), /at least one checkpoint/);
  });

  it('hardness agrees with a brute-force definition', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 11 }), (labels) => {
        const final = labels[labels.length - 1];
        const expected = labels.findIndex((_, i) => labels.slice(i).every((l) => l === final));
        assert.equal(hardnessFromLabels(labels), expected);
      }),
    );
  });

  it('histogram: fractions per bin, unknown (-1) skipped', () => {
    assert.deepEqual(Array.from(hardnessHistogram([0, 1, 1, 3, -1], 4)), [0.25, 0.5, 0, 0.25]);
    assert.deepEqual(Array.from(hardnessHistogram([-1], 3)), [0, 0, 0]);
    assert.throws(() => hardnessHistogram([4], 4), /not an integer in \[0, 3\]/);
  });

  it('Pearson distance by hand', () => {
    // a = (1, 2, 3), b = (1, 3, 2): centred (−1, 0, 1) and (−1, 1, 0): r = 1 / (√2 · √2) = 0.5.
    assert.ok(Math.abs(pearsonDistance([1, 2, 3], [1, 3, 2]) - 0.5) < 1e-15);
    assert.equal(pearsonDistance([1, 2, 3], [2, 4, 6]), 0);
    assert.equal(pearsonDistance([1, 2, 3], [3, 2, 1]), 2);
    assert.equal(pearsonDistance([1, 1, 1], [3, 2, 1]), 1);
    assert.throws(() => pearsonDistance([1], [1, 2]), /one length/);
  });

  it('Pearson distance lies in [0, 2] and is symmetric', () => {
    const vec = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 11, maxLength: 11 });
    fc.assert(
      fc.property(vec, vec, (a, b) => {
        const d = pearsonDistance(a, b);
        assert.ok(d >= 0 && d <= 2);
        assert.ok(Math.abs(d - pearsonDistance(b, a)) < 1e-12);
      }),
    );
  });

  it('calibration: the threshold per length is the largest chunk distance to the benign histogram', () => {
    const sequences = [
      [0, 0, 1, 1, 2, 0],
      [0, 1, 2, 2],
    ];
    const { benignHistogram, thresholds } = calibrateHoda(sequences, { bins: 3, lengths: [2, 4] });
    assert.deepEqual(benignHistogram, [4 / 10, 3 / 10, 3 / 10]);
    const chunks2 = [
      [0, 0],
      [1, 1],
      [2, 0],
      [0, 1],
      [2, 2],
    ];
    const expected2 = Math.max(...chunks2.map((c) => pearsonDistance(hardnessHistogram(c, 3), benignHistogram)));
    assert.deepEqual(thresholds[0], { length: 2, threshold: expected2, sequences: 5 });
    const expected4 = Math.max(
      ...[
        [0, 0, 1, 1],
        [0, 1, 2, 2],
      ].map((c) => pearsonDistance(hardnessHistogram(c, 3), benignHistogram)),
    );
    assert.deepEqual(thresholds[1], { length: 4, threshold: expected4, sequences: 2 });
    assert.throws(() => calibrateHoda(sequences, { bins: 3, lengths: [7] }), /no benign sequence has 7/);
  });

  it('checks its options, naming the field, what was given and what to write', () => {
    const refused = (options: object, message: RegExp) =>
      assert.throws(
        () => calibrateHoda([[0, 1, 2, 0]], options as never),
        (e: unknown) => e instanceof DetectionConfigError && message.test((e as Error).message),
        `expected ${message}`,
      );
    refused({ bins: 3, lengths: [0] }, /^calibrateHoda option lengths\[0\] must be a positive integer \(a chunk length\), got 0$/);
    refused({ bins: 1, lengths: [2] }, /^calibrateHoda option bins must be an integer from 2 to 255 .*, got 1$/);
    refused(
      { bins: 3, lengths: [2], benignHistogram: [1, 2] },
      /^calibrateHoda option benignHistogram must be a list of 3 non-negative numbers, one per bin, got \[1,2\]$/,
    );
    refused({ bins: 3, lengths: [2], length: 2 }, /^unknown calibrateHoda option length; write one of: bins, lengths, benignHistogram$/);
  });

  it('detection option hoda: a whole calibration, or { enabled: false } alone to keep it off', () => {
    const calibration = { benignHistogram: [0.5, 0.3, 0.2], thresholds: [{ length: 100, threshold: 0.4 }] };
    assert.equal(resolveOptions({ hoda: calibration }).hoda.enabled, true);
    assert.deepEqual(resolveOptions({ hoda: { enabled: false } }).hoda, { enabled: false, bins: 0, benignHistogram: [], thresholds: [] });
    const off = resolveOptions({ hoda: { enabled: false, ...calibration } }).hoda;
    assert.equal(off.enabled, false);
    assert.equal(off.bins, 3, 'a calibration given with enabled false is still checked and kept');
    const refused = (hoda: object, message: RegExp) =>
      assert.throws(
        () => resolveOptions({ hoda } as never),
        (e: unknown) => e instanceof DetectionConfigError && message.test((e as Error).message),
        `expected ${message}`,
      );
    refused({}, /^detection option hoda\.benignHistogram must be given with the other half .*enabled: false \}, got undefined$/);
    refused({ enabled: true }, /hoda\.benignHistogram must be given/);
    refused({ benignHistogram: calibration.benignHistogram }, /hoda\.thresholds must be given/);
    refused({ enabled: false, thresholds: calibration.thresholds }, /hoda\.benignHistogram must be given/);
    refused({ enabled: false, benignHistogram: [1, 1, 1], thresholds: calibration.thresholds }, /benignHistogram is flat/);
  });
});

/** Hardness draws from a histogram over 11 bins. */
function draw(random: () => number, histogram: number[]): number {
  let u = random();
  for (let b = 0; b < histogram.length; b++) {
    u -= histogram[b];
    if (u < 0) return b;
  }
  return histogram.length - 1;
}

describe('HODA detector', () => {
  // Benign queries are mostly easy; extraction queries (synthetic or foreign) pile up in the late bins.
  const benign = [0.45, 0.15, 0.1, 0.07, 0.05, 0.04, 0.04, 0.03, 0.03, 0.02, 0.02];
  const attack = [0.05, 0.03, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.14, 0.2, 0.22];
  const random = rng(11);
  const benignSequences = Array.from({ length: 60 }, () => Array.from({ length: 100 }, () => draw(random, benign)));
  const calibration = calibrateHoda(benignSequences, { bins: 11, lengths: [50, 100] });
  const detection = createClientDetection({ budget: false, ood: { enabled: false }, prada: { enabled: false }, hoda: calibration });

  const run = (histogram: number[], seed: number, queries: number) => {
    const r = rng(seed);
    let state = detection.initialState(0);
    let flagged = 0;
    for (let i = 0; i < queries; i++) {
      const probs = { rows: 1, cols: 10, data: new Float32Array(10).fill(0.1) };
      const { state: next, assessment } = detection.observe(state, { time: i, probs, hardness: Int8Array.of(draw(r, histogram)) });
      state = next;
      if (assessment.verdicts.find((v) => v.detector === 'hoda')!.flagged) flagged++;
    }
    return flagged;
  };

  it('flags an attacker within 100 queries and not a benign client', () => {
    assert.ok(run(attack, 5, 100) > 0);
    assert.equal(run(benign, 6, 100), 0);
  });

  it('evaluates on non-overlapping chunks like the calibration: the longest calibrated length the count is a multiple of', () => {
    const values = Array.from({ length: 150 }, (_, i) => (i * i) % 11);
    let state = detection.initialState(0);
    const distances: number[] = [];
    values.forEach((h, i) => {
      const probs = { rows: 1, cols: 2, data: Float32Array.of(0.9, 0.1) };
      const { state: next, assessment } = detection.observe(state, { time: i, probs, hardness: Int8Array.of(h) });
      state = next;
      distances.push(assessment.verdicts.find((v) => v.detector === 'hoda')!.evidence.distance ?? -1);
    });
    const expected = (from: number, to: number) => pearsonDistance(hardnessHistogram(values.slice(from, to), 11), calibration.benignHistogram);
    assert.equal(distances[48], -1, 'nothing before 50');
    assert.equal(distances[49], expected(0, 50));
    assert.equal(distances[98], expected(0, 50), 'held until the next chunk');
    assert.equal(distances[99], expected(0, 100), 'at 100 the 100-long chunk wins');
    assert.equal(distances[149], expected(100, 150));
  });

  it('is off without checkpoints (no hardness): no verdict past its empty evidence', () => {
    const state = detection.initialState(0);
    const { assessment } = detection.observe(state, { time: 1, probs: { rows: 1, cols: 2, data: Float32Array.of(0.5, 0.5) } });
    const hoda = assessment.verdicts.find((v) => v.detector === 'hoda')!;
    assert.equal(hoda.flagged, false);
    assert.deepEqual(hoda.evidence, { queries: 0 });
    assert.equal(createClientDetection().config.hoda.enabled, false);
  });
});
