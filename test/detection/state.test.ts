import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createClientDetection, DetectionConfigError, DetectionInputError, type ClientObservation, type ClientState } from '../../src/detection/index.js';
import { calibrateHoda } from '../../src/detection/index.js';
import { gaussian, jbdaQueries, naturalQueries, observationOf, rng } from './synthetic.js';

const hoda = calibrateHoda([Array.from({ length: 400 }, (_, i) => (i * 7) % 11)], { bins: 11, lengths: [20, 50] });

/** A random observation: a few rows, inputs 40 wide (sketched to 32), hardness, some low confidence. */
function randomObservation(random: () => number, time: number): ClientObservation {
  const rows = 1 + Math.floor(random() * 3);
  const probs = new Float32Array(rows * 5);
  const inputs = new Float32Array(rows * 40);
  const hardness = new Int8Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let j = 0; j < 5; j++) sum += probs[r * 5 + j] = Math.exp(3 * gaussian(random));
    for (let j = 0; j < 5; j++) probs[r * 5 + j] /= sum;
    for (let j = 0; j < 40; j++) inputs[r * 40 + j] = random();
    hardness[r] = random() < 0.1 ? -1 : Math.floor(random() * 11);
  }
  return { time, probs: { rows, cols: 5, data: probs }, inputs: { rows, cols: 40, data: inputs }, hardness };
}

describe('client state', () => {
  const detection = createClientDetection({
    window: { lengthMs: 60_000, bucketMs: 5_000 },
    ood: { minQueries: 5 },
    prada: { minPooled: 20, maxDistances: 60, maxKeptPerClass: 4, maxKeptPoints: 12 },
    hoda,
    budget: { maxQueries: 80 },
    policy: { steps: ['mad-argmax', 'argmax', 'throttle:30'], stepQueries: 10, calmQueries: 20, calmMs: 20_000 },
  });

  it('JSON.stringify/parse gives identical subsequent behaviour', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 60 }), fc.integer({ min: 1, max: 60 }), (seed, before, after) => {
        const random = rng(seed);
        let time = 0;
        const next = () => randomObservation(random, (time += Math.floor(random() * 4000)));
        let state = detection.initialState(0);
        for (let i = 0; i < before; i++) state = detection.observe(state, next()).state;
        let copy = JSON.parse(JSON.stringify(state)) as ClientState;
        assert.deepEqual(copy, state);
        for (let i = 0; i < after; i++) {
          const observation = next();
          const a = detection.observe(state, observation);
          const b = detection.observe(copy, observation);
          assert.deepEqual(b.assessment, a.assessment);
          assert.deepEqual(detection.assess(copy, time + 7000), detection.assess(state, time + 7000));
          state = a.state;
          copy = JSON.parse(JSON.stringify(b.state)) as ClientState;
          assert.equal(JSON.stringify(copy), JSON.stringify(state));
        }
      }),
      { numRuns: 25 },
    );
  });

  it('observe leaves the state it is given unchanged', () => {
    const random = rng(3);
    let state = detection.initialState(0);
    for (let i = 0; i < 30; i++) state = detection.observe(state, randomObservation(random, i * 100)).state;
    const text = JSON.stringify(state);
    detection.observe(state, randomObservation(random, 5000));
    assert.equal(JSON.stringify(state), text);
  });

  it('stays under the documented size bound after 10 000 observations (defaults, 10 classes, 784-wide inputs)', () => {
    const defaults = createClientDetection({ hoda: calibrateHoda([Array.from({ length: 2000 }, (_, i) => i % 11)], { bins: 11, lengths: [100, 1000] }) });
    const bound = defaults.stateSizeBound(10);
    const queries = [...jbdaQueries(8, 5000), ...naturalQueries(9, 5000)];
    let state = defaults.initialState(0);
    let largest = 0;
    queries.forEach((q, i) => {
      const observation = { ...observationOf(q, i * 50, 10, 0.3 + (0.7 * ((i * 37) % 100)) / 100), hardness: Int8Array.of(i % 11) };
      state = defaults.observe(state, observation).state;
      if (i % 500 === 499) largest = Math.max(largest, JSON.stringify(state).length);
    });
    assert.ok(largest > 0.5 * bound, `bound ${bound} is loose: largest ${largest}`);
    assert.ok(largest <= bound, `largest ${largest} > bound ${bound}`);
    console.log(`state size after 10 000 observations: ${largest} bytes, bound ${bound}`);
  });

  it('stays under the bound with many classes (K = 100, random classes, 64-wide inputs)', () => {
    const defaults = createClientDetection();
    const queries = naturalQueries(12, 3000, 100, 64);
    let state = defaults.initialState(0);
    let largest = 0;
    queries.forEach((q, i) => {
      state = defaults.observe(state, observationOf(q, i * 997, 100, 0.5)).state;
      if (i % 300 === 299) largest = Math.max(largest, JSON.stringify(state).length);
    });
    assert.ok(largest <= defaults.stateSizeBound(100), `largest ${largest} > bound ${defaults.stateSizeBound(100)}`);
  });

  it('rejects observations that do not fit the contract, and foreign states', () => {
    const state = detection.initialState(0);
    const probs = { rows: 2, cols: 2, data: Float32Array.of(0.5, 0.5, 0.1, 0.9) };
    assert.throws(() => detection.observe(state, { time: 0, probs: { rows: 2, cols: 2, data: new Float32Array(3) } }), DetectionInputError);
    assert.throws(() => detection.observe(state, { time: 0, probs, inputs: { rows: 1, cols: 2, data: new Float32Array(2) } }), /2 rows of probs/);
    assert.throws(() => detection.observe(state, { time: 0, probs, hardness: new Int8Array(1) }), /one value per row/);
    assert.throws(
      () => detection.observe(state, { time: 0, probs, hardness: Int8Array.of(0, 11) }),
      (e: Error) => e instanceof DetectionInputError && /hardness 11/.test(e.message),
    );
    assert.throws(() => detection.observe(state, { time: Number.NaN, probs }), /time must be finite/);
    assert.throws(() => detection.assess({ hello: 1 }, 0), /initialState/);
  });

  it('restarts the detectors, keeping the policy, for a state written under other options', () => {
    const other = createClientDetection({ prada: { dims: 16 } });
    let state = other.initialState(0);
    for (let i = 0; i < 10; i++) state = other.observe(state, randomObservation(rng(i), i)).state;
    const { state: next } = detection.observe(state, randomObservation(rng(99), 20));
    assert.equal((next as { pol: { queries: number } }).pol.queries > 10, true);
    assert.equal((next as { prada: { n: number } }).prada.n <= 3, true);
  });
});

describe('options', () => {
  const bad: [unknown, RegExp][] = [
    [{ prada: { delta: 1.2 } }, /prada\.delta must be a number > 0 and < 1, e\.g\. delta: 0\.95/],
    [{ prada: { dims: 2.5 } }, /prada\.dims must be an integer/],
    [{ prada: { maxDistances: 6000 } }, /maxDistances must be an integer ≥ 20 and ≤ 5000/],
    [{ prada: { sigma: 1 } }, /unknown detection option prada\.sigma; write one of: enabled, delta/],
    [{ ood: { maxRate: 1 } }, /ood\.maxRate/],
    [{ window: { lengthMs: 60_000, bucketMs: 10 } }, /at most 1000 \(bucketMs ≥ 60\)/],
    [{ budget: { action: 'block' } }, /budget\.action must be "throttle" or "refuse"/],
    [{ policy: { steps: ['argmax', 'throttle:soon'] } }, /policy\.steps\[1\] "throttle:soon": write "throttle:SECONDS"/],
    [{ policy: { steps: ['argmax', 'throttle:86401'] } }, /"throttle:86401": write "throttle:SECONDS" with whole seconds from 1 to 86400/],
    [{ policy: { steps: [''] } }, /a tier name \(e\.g\. "argmax"\), "throttle:SECONDS" or "refuse"/],
    [{ hoda: { benignHistogram: [1], thresholds: [] } }, /hoda\.benignHistogram .* calibrateHoda/],
    [{ hoda: { benignHistogram: [0.5, 0.5], thresholds: [{ length: 5, threshold: 0.3 }] } }, /hoda\.benignHistogram is flat/],
    [{ hoda: { benignHistogram: [1, 2], thresholds: [{ length: 5, threshold: 3 }] } }, /hoda\.thresholds\[0\]\.threshold must be a number ≥ 0 and ≤ 2/],
    ['fast', /must be an object/],
  ];
  for (const [options, message] of bad) {
    it(`rejects ${JSON.stringify(options)}`, () => {
      assert.throws(
        () => createClientDetection(options as never),
        (e: Error) => e instanceof DetectionConfigError && message.test(e.message),
      );
    });
  }

  it('documents its defaults', () => {
    const { config } = createClientDetection();
    assert.equal(config.prada.delta, 0.95);
    assert.deepEqual(config.policy.steps, [
      { action: 'escalate', tier: 'mad-argmax' },
      { action: 'escalate', tier: 'argmax' },
    ]);
    assert.deepEqual(config.budget, { maxQueries: 10_000, action: 'throttle' });
    const parsed = createClientDetection({ policy: { steps: ['mad-argmax', 'throttle:60', 'refuse'] }, budget: false }).config;
    assert.deepEqual(parsed.policy.steps, [{ action: 'escalate', tier: 'mad-argmax' }, { action: 'throttle', retryAfterSeconds: 60 }, { action: 'refuse' }]);
    assert.equal(parsed.budget, undefined);
  });
});
