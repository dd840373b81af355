import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createClientDetection, type ClientObservation, type ClientState } from '../../src/detection/index.js';
import { decide, initialPolicyState, stepPolicy, type PolicyConfig } from '../../src/detection/policy.js';
import { initialWindowState, updateWindows, windowTotals } from '../../src/detection/windows.js';

/** `rows` queries at `time`, each with the victim's max probability `confidence` over 4 classes. */
function queries(time: number, rows: number, confidence: number): ClientObservation {
  const data = new Float32Array(rows * 4);
  for (let r = 0; r < rows; r++) {
    data.fill((1 - confidence) / 3, r * 4, r * 4 + 4);
    data[r * 4 + (r % 4)] = confidence;
  }
  return { time, probs: { rows, cols: 4, data } };
}

const MINUTE = 60_000;

describe('out-of-distribution rate and windows', () => {
  const detection = createClientDetection({
    window: { lengthMs: 10 * MINUTE, bucketMs: MINUTE },
    ood: { confidenceThreshold: 0.7, maxRate: 0.5, minQueries: 20 },
    prada: { enabled: false },
    budget: false,
  });
  const ood = (s: ClientState, t: number) => detection.assess(s, t).verdicts.find((v) => v.detector === 'ood')!;

  it('counts the low-confidence fraction and flags above maxRate once minQueries are in', () => {
    let s = detection.initialState(0);
    s = detection.observe(s, queries(0, 10, 0.4)).state;
    assert.equal(ood(s, 0).evidence.rate, 1);
    assert.equal(ood(s, 0).flagged, false, 'below minQueries');
    s = detection.observe(s, queries(1000, 15, 0.95)).state;
    assert.equal(ood(s, 1000).evidence.queries, 25);
    assert.equal(ood(s, 1000).evidence.lowConfidence, 10);
    assert.equal(ood(s, 1000).flagged, false, '10/25 = 0.4 ≤ 0.5');
    s = detection.observe(s, queries(2000, 6, 0.5)).state;
    assert.equal(ood(s, 2000).evidence.rate, 16 / 31);
    assert.equal(ood(s, 2000).flagged, true);
  });

  it('expires buckets by the time passed in', () => {
    let s = detection.initialState(0);
    s = detection.observe(s, queries(0, 30, 0.4)).state;
    s = detection.observe(s, queries(5 * MINUTE, 30, 0.99)).state;
    assert.equal(ood(s, 5 * MINUTE).evidence.queries, 60);
    // The bucket starting at 0 leaves the 10-minute window at 10 min; the one at 5 min at 15 min.
    assert.equal(ood(s, 10 * MINUTE - 1).evidence.queries, 60);
    assert.equal(ood(s, 10 * MINUTE).evidence.queries, 30);
    assert.equal(ood(s, 10 * MINUTE).evidence.rate, 0);
    assert.equal(ood(s, 15 * MINUTE).evidence.queries, 0);
    // Time never runs backwards: an older observation counts at the latest time seen.
    s = detection.observe(s, queries(MINUTE, 1, 0.99)).state;
    assert.equal(ood(s, 5 * MINUTE).evidence.queries, 61);
  });

  it('treats a non-finite row as low confidence', () => {
    const s = detection.observe(detection.initialState(0), { time: 0, probs: { rows: 1, cols: 2, data: Float32Array.of(Number.NaN, Number.NaN) } }).state;
    assert.equal(ood(s, 0).evidence.lowConfidence, 1);
  });
});

describe('window counts', () => {
  it('equal a naive count of the queries whose bucket started within the window', () => {
    const config = { lengthMs: 10_000, bucketMs: 1_000 };
    const ood = { enabled: true, confidenceThreshold: 0.7, maxRate: 0.5, minQueries: 1 };
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 4_000 }), fc.integer({ min: 0, max: 5 }), fc.boolean()), { maxLength: 40 }),
        fc.integer({ min: 0, max: 15_000 }),
        (steps, later) => {
          let state = initialWindowState(0);
          let time = 0;
          const seen: { time: number; rows: number; low: boolean }[] = [];
          for (const [dt, rows, low] of steps) {
            time += dt;
            const probs = { rows, cols: 2, data: new Float32Array(rows * 2).fill(low ? 0.5 : 0.1).map((v, i) => (low || i % 2 ? v : 0.9)) };
            state = updateWindows(config, ood, state, time, probs);
            seen.push({ time, rows, low });
          }
          const now = time + later;
          const live = seen.filter((o) => Math.floor(o.time / 1000) * 1000 > now - 10_000);
          const totals = windowTotals(config, state, now);
          assert.equal(
            totals.queries,
            live.reduce((n, o) => n + o.rows, 0),
          );
          assert.equal(
            totals.lowConfidence,
            live.filter((o) => o.low).reduce((n, o) => n + o.rows, 0),
          );
          assert.ok(state.b.length <= 11, 'at most one bucket per bucketMs of the window, plus the current one');
        },
      ),
    );
  });
});

describe('query budget', () => {
  const detection = createClientDetection({
    window: { lengthMs: 10 * MINUTE, bucketMs: MINUTE },
    prada: { enabled: false },
    ood: { enabled: false },
    budget: { maxQueries: 100 },
  });

  it('throttles once the window holds maxQueries, with Retry-After until enough expires', () => {
    let s = detection.initialState(0);
    let r = detection.observe(s, queries(0, 60, 0.9));
    assert.equal(r.assessment.action, 'default');
    r = detection.observe(r.state, queries(3 * MINUTE + 500, 39, 0.9));
    assert.equal(r.assessment.action, 'default', '99 < 100');
    r = detection.observe(r.state, queries(3 * MINUTE + 500, 1, 0.9));
    assert.equal(r.assessment.action, 'throttle');
    assert.equal(r.assessment.changed, true);
    // The 60 from the bucket at 0 leave at 10 min: 9 min 59.5 s from now → 600 s rounded up.
    assert.equal(r.assessment.retryAfterSeconds, Math.ceil((10 * MINUTE - (3 * MINUTE + 500)) / 1000));
    s = r.state;
    assert.equal(detection.assess(s, 10 * MINUTE - 1).action, 'throttle');
    const later = detection.assess(s, 10 * MINUTE);
    assert.equal(later.action, 'default');
    assert.equal(later.changed, false, 'assess records nothing');
    r = detection.observe(s, queries(10 * MINUTE, 1, 0.9));
    assert.equal(r.assessment.action, 'default');
    assert.equal(r.assessment.changed, true);
  });

  it('refuses instead when configured', () => {
    const refusing = createClientDetection({ prada: { enabled: false }, budget: { maxQueries: 5, action: 'refuse' } });
    const r = refusing.observe(refusing.initialState(0), queries(0, 5, 0.9));
    assert.equal(r.assessment.action, 'refuse');
    assert.equal(r.assessment.retryAfterSeconds, undefined);
  });
});

const policy: PolicyConfig = {
  steps: [
    { action: 'escalate', tier: 'mad-argmax' },
    { action: 'escalate', tier: 'argmax' },
    { action: 'throttle', retryAfterSeconds: 60 },
  ],
  release: 0.8,
  stepQueries: 100,
  calmQueries: 300,
  calmMs: 3_600_000,
};

describe('policy hysteresis', () => {
  it('escalates at once, climbs after stepQueries, descends one step per calm period', () => {
    let s = initialPolicyState();
    s = stepPolicy(policy, s, 0, 10, true, 1.2);
    assert.equal(s.level, 1);
    s = stepPolicy(policy, s, 1, 50, true, 1.2);
    assert.equal(s.level, 1, 'only 50 queries since the step');
    s = stepPolicy(policy, s, 2, 50, true, 1.2);
    assert.equal(s.level, 2);
    for (let i = 0; i < 5; i++) s = stepPolicy(policy, s, 3 + i, 100, true, 1.2);
    assert.equal(s.level, 3, 'the ladder has three steps');
    assert.deepEqual(decide(policy, 3, undefined), { action: 'throttle', retryAfterSeconds: 60, paced: { seconds: 60, tier: 'argmax' } });
    s = stepPolicy(policy, s, 10, 299, false, 0.1);
    assert.equal(s.level, 3, 'the calm run starts before these 299 queries: not yet');
    s = stepPolicy(policy, s, 11, 1, false, 0.1);
    assert.equal(s.level, 2);
    s = stepPolicy(policy, s, 12, 200, false, 0.1);
    assert.equal(s.level, 2, 'a new calm period for each step down');
    s = stepPolicy(policy, s, 13 + 3_600_000, 1, false, 0.1);
    assert.equal(s.level, 1, 'or calmMs of time');
  });

  it('combines the ladder with the budget: the stronger action wins, throttles take the longer wait', () => {
    assert.deepEqual(decide(policy, 1, undefined), { action: 'escalate', tier: 'mad-argmax' });
    assert.deepEqual(decide(policy, 1, { action: 'throttle', retryAfterSeconds: 5 }), { action: 'throttle', retryAfterSeconds: 5 });
    assert.deepEqual(decide(policy, 3, { action: 'throttle', retryAfterSeconds: 5 }), { action: 'throttle', retryAfterSeconds: 60 });
    assert.deepEqual(decide(policy, 3, { action: 'throttle', retryAfterSeconds: 90 }), { action: 'throttle', retryAfterSeconds: 90 });
    assert.deepEqual(decide(policy, 0, { action: 'refuse' }), { action: 'refuse' });
  });

  it('a ladder throttle paces with the nearest tier below it; a full budget stops the pacing', () => {
    const steps = (...names: PolicyConfig['steps']) => ({ ...policy, steps: names });
    const throttle = (retryAfterSeconds: number) => ({ action: 'throttle', retryAfterSeconds }) as const;
    const argmax = { action: 'escalate', tier: 'argmax' } as const;
    // No tier below: paced answers get the default defense.
    assert.deepEqual(decide(steps(throttle(30)), 1, undefined), { action: 'throttle', retryAfterSeconds: 30, paced: { seconds: 30 } });
    // The nearest tier below, past another throttle.
    assert.deepEqual(decide(steps(argmax, throttle(30), throttle(300), { action: 'refuse' }), 3, undefined), {
      action: 'throttle',
      retryAfterSeconds: 300,
      paced: { seconds: 300, tier: 'argmax' },
    });
    assert.deepEqual(decide(steps(argmax, throttle(30), { action: 'refuse' }), 3, undefined), { action: 'refuse' });
    // The budget's window is full: nothing goes on, paced or not.
    assert.deepEqual(decide(policy, 3, { action: 'throttle', retryAfterSeconds: 5 }), { action: 'throttle', retryAfterSeconds: 60 });
    assert.deepEqual(decide(policy, 3, { action: 'refuse' }), { action: 'refuse' });
  });

  it('a paced client is observed: calm queries at the throttle step bring it down, flagging ones take it up', () => {
    const detection = createClientDetection({
      window: { lengthMs: 10 * MINUTE, bucketMs: MINUTE },
      ood: { maxRate: 0.5, minQueries: 20 },
      prada: { enabled: false },
      budget: false,
      policy: { steps: ['argmax', 'throttle:60', 'refuse'], stepQueries: 20, calmQueries: 40, calmMs: 24 * 3_600_000 },
    });
    let r = detection.observe(detection.initialState(0), queries(0, 30, 0.4));
    assert.equal(r.assessment.action, 'escalate');
    r = detection.observe(r.state, queries(1_000, 20, 0.4));
    assert.deepEqual({ action: r.assessment.action, paced: r.assessment.paced }, { action: 'throttle', paced: { seconds: 60, tier: 'argmax' } });
    assert.deepEqual(detection.assess(r.state, 2_000).paced, { seconds: 60, tier: 'argmax' });
    // Still flagging after stepQueries more (paced) queries: refused.
    const flagging = detection.observe(r.state, queries(60_000, 20, 0.4));
    assert.equal(flagging.assessment.action, 'refuse');
    assert.equal(flagging.assessment.paced, undefined);
    // Calm instead (the low-confidence buckets expired): one step down after calmQueries.
    let calm = detection.observe(r.state, queries(11 * MINUTE, 20, 0.95));
    assert.equal(calm.assessment.action, 'throttle');
    calm = detection.observe(calm.state, queries(12 * MINUTE, 20, 0.95));
    assert.deepEqual(
      { action: calm.assessment.action, tier: calm.assessment.tier, paced: calm.assessment.paced },
      { action: 'escalate', tier: 'argmax', paced: undefined },
    );
  });

  it('assess sees a calm period that ran out by time, without changing the state', () => {
    const detection = createClientDetection({
      window: { lengthMs: 10 * MINUTE, bucketMs: MINUTE },
      ood: { maxRate: 0.5, minQueries: 20 },
      prada: { enabled: false },
      budget: false,
      policy: { calmQueries: 10_000, calmMs: 30 * MINUTE },
    });
    let r = detection.observe(detection.initialState(0), queries(0, 30, 0.4));
    assert.equal(r.assessment.tier, 'mad-argmax');
    assert.equal(r.assessment.changed, true);
    // 11 minutes later the low-confidence bucket has expired: confident queries start a calm run.
    r = detection.observe(r.state, queries(11 * MINUTE, 30, 0.95));
    assert.equal(r.assessment.tier, 'mad-argmax');
    assert.equal(detection.assess(r.state, 41 * MINUTE - 1).tier, 'mad-argmax');
    const text = JSON.stringify(r.state);
    const later = detection.assess(r.state, 41 * MINUTE);
    assert.equal(later.action, 'default');
    assert.equal(later.changed, false);
    assert.equal(JSON.stringify(r.state), text);
    r = detection.observe(r.state, queries(41 * MINUTE, 1, 0.95));
    assert.equal(r.assessment.action, 'default');
    assert.equal(r.assessment.changed, true);
  });

  it('never descends while the evidence hovers between release and the flag threshold', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.double({ min: 0.8, max: 1.5, noNaN: true }), fc.integer({ min: 1, max: 400 })), { minLength: 1, maxLength: 60 }),
        (steps) => {
          let s = stepPolicy(policy, initialPolicyState(), 0, 1, true, 1.5);
          let previous = s.level;
          steps.forEach(([level, rows], i) => {
            s = stepPolicy(policy, s, i, rows, level > 1, level);
            assert.ok(s.level >= previous, `went down from ${previous} to ${s.level} at level ${level}`);
            previous = s.level;
          });
        },
      ),
    );
  });

  it('does not flap when the OOD rate crosses its threshold back and forth', () => {
    const detection = createClientDetection({
      window: { lengthMs: 10 * MINUTE, bucketMs: MINUTE },
      ood: { maxRate: 0.5, minQueries: 20 },
      prada: { enabled: false },
      budget: false,
      policy: { steps: ['mad-argmax', 'argmax'], stepQueries: 1_000_000, calmQueries: 500 },
    });
    let s = detection.initialState(0);
    let changes = 0;
    const actions: string[] = [];
    // Alternate batches that put the window's rate just above and just below 0.5.
    for (let i = 0; i < 200; i++) {
      const r = detection.observe(s, queries(i * 100, 10, i % 2 === 0 ? 0.4 : 0.95));
      s = r.state;
      if (r.assessment.changed) changes++;
      actions.push(r.assessment.tier ?? r.assessment.action);
    }
    assert.equal(changes, 1, `changes: ${actions.join(',')}`);
    assert.equal(actions.at(-1), 'mad-argmax');
  });
});
