import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createClientDetection, createCohortDetection } from '../../src/detection/index.js';
import { FINGERPRINT_DEFAULTS, fingerprintRows, resolveFingerprintOptions, sharedHashes } from '../../src/detection/above/fingerprint.js';
import { DetectionConfigError } from '../../src/detection/errors.js';
import { rng } from './synthetic.js';

/** A 28×28 "drawing": random strokes on a blank background. */
function drawing(seed: number): Float32Array {
  const random = rng(seed);
  const x = new Float32Array(784);
  for (let s = 0; s < 14; s++) {
    let r = 4 + Math.floor(random() * 20);
    let c = 4 + Math.floor(random() * 20);
    for (let step = 0; step < 16; step++) {
      x[r * 28 + c] = 0.6 + 0.4 * random();
      if (c + 1 < 28) x[r * 28 + c + 1] = 0.3 * random();
      r = Math.min(27, Math.max(0, r + Math.floor(random() * 3) - 1));
      c = Math.min(27, Math.max(0, c + Math.floor(random() * 3) - 1));
    }
  }
  return x;
}

describe('query fingerprints (Blacklight-style)', () => {
  const config = resolveFingerprintOptions();

  it('keeps the k smallest distinct window hashes, sorted, and none for a constant row', () => {
    const rows = 3;
    const data = new Float32Array(rows * 784);
    data.set(drawing(1), 0);
    data.set(drawing(2), 784);
    // Row 2 stays blank (constant).
    const prints = fingerprintRows(config, rows, 784, data);
    assert.equal(prints.length, rows * config.hashes);
    for (let r = 0; r < 2; r++) {
      const row = Array.from(prints.subarray(r * config.hashes, (r + 1) * config.hashes));
      assert.ok(
        row.every((h) => h !== 0),
        'a drawing has enough distinct windows',
      );
      assert.deepEqual(
        row,
        [...row].sort((a, b) => a - b),
      );
      assert.equal(new Set(row).size, row.length);
    }
    assert.ok(prints.subarray(2 * config.hashes).every((h) => h === 0));
  });

  it('matches a query with itself at any scale and with a small perturbation, not with another drawing', () => {
    const a = drawing(7);
    const b = drawing(8);
    const random = rng(9);
    const nudged = Float32Array.from(a, (v) => Math.min(1, Math.max(0, v + (random() < 0.5 ? -0.01 : 0.01))));
    const scaled = Float32Array.from(a, (v) => v * 255);
    const fp = (x: Float32Array) => fingerprintRows(config, 1, 784, x);
    assert.equal(sharedHashes(fp(a), fp(scaled)), config.hashes, 'the row is scaled to its own range first');
    assert.ok(sharedHashes(fp(a), fp(nudged)) >= config.matchThreshold, `±0.01 shares ${sharedHashes(fp(a), fp(nudged))}`);
    assert.ok(sharedHashes(fp(a), fp(b)) < config.matchThreshold, `two drawings share ${sharedHashes(fp(a), fp(b))}`);
  });

  it('validates its options', () => {
    assert.throws(() => resolveFingerprintOptions({ hashes: 10, matchThreshold: 11 }), /matchThreshold \(11\) must be at most hashes \(10\)/);
    assert.throws(() => resolveFingerprintOptions({ window: 1 }), /window must be an integer from 2/);
    assert.throws(() => resolveFingerprintOptions({ nope: 1 } as never), /unknown fingerprint option nope/);
  });

  it('names the option, what was given and what to write; unknown keys list the allowed ones', () => {
    const refused = (options: object, message: RegExp) =>
      assert.throws(
        () => resolveFingerprintOptions(options as never),
        (e: unknown) => e instanceof DetectionConfigError && message.test((e as Error).message),
        `expected ${message}`,
      );
    refused({ levels: 2.5 }, /^fingerprint option levels must be an integer from 2 to 256, e\.g\. levels: 5, got 2\.5$/);
    refused({ seed: '7' }, /^fingerprint option seed must be an integer from 0 to 2147483647, e\.g\. seed: \d+, got "7"$/);
    refused({ positional: 1 }, /^fingerprint option positional must be true or false, got 1$/);
    refused(
      { hash: 20 },
      /^unknown fingerprint option hash; write one of: window, pool, minChanges, levels, hashes, matchThreshold, positional, positionBuckets, seed$/,
    );
    refused([] as never, /^fingerprint options must be an object such as \{ window: 20, .*\}, got \[\]$/);
    assert.deepEqual(resolveFingerprintOptions({ window: 20 }), { ...FINGERPRINT_DEFAULTS, window: 20 }, 'the defaults fill the rest');
  });
});

describe('the per-client fingerprint detector and the cohort detection', () => {
  const probs = (rows: number) => ({ rows, cols: 2, data: new Float32Array(rows * 2).fill(0.5).map((_, i) => (i % 2 ? 0.05 : 0.95)) });

  it('flags a client once minMatches of its queries matched another identity and their share is above maxShare', () => {
    const detection = createClientDetection({
      prada: { enabled: false },
      ood: { enabled: false },
      budget: false,
      fingerprint: { minMatches: 3, maxShare: 0.2 },
    });
    let state = detection.initialState(0);
    // No matches sent (fingerprints off in the serving layer): no verdict at all.
    state = detection.observe(state, { time: 0, probs: probs(5) }).state;
    assert.equal(detection.assess(state, 0).verdicts.length, 0);
    state = detection.observe(state, { time: 1, probs: probs(10), matches: new Uint8Array(10) }).state;
    let verdict = detection.assess(state, 1).verdicts.find((v) => v.detector === 'fingerprint')!;
    assert.equal(verdict.flagged, false);
    assert.equal(verdict.evidence.queries, 10);
    state = detection.observe(state, { time: 2, probs: probs(2), matches: Uint8Array.of(1, 1) }).state;
    assert.equal(detection.assess(state, 2).verdicts.find((v) => v.detector === 'fingerprint')!.flagged, false, '2 matches < minMatches');
    const step = detection.observe(state, { time: 3, probs: probs(2), matches: Uint8Array.of(1, 1) });
    verdict = step.assessment.verdicts.find((v) => v.detector === 'fingerprint')!;
    assert.equal(verdict.flagged, true, JSON.stringify(verdict));
    assert.equal(step.assessment.action, 'escalate');
    // Counts leave with the window (1 h).
    verdict = detection.assess(step.state, 3_600_000 + 300_000).verdicts.find((v) => v.detector === 'fingerprint')!;
    assert.equal(verdict.evidence.matched, 0);
    assert.equal(verdict.flagged, false);
    assert.throws(() => detection.observe(step.state, { time: 4, probs: probs(2), matches: Uint8Array.of(1) }), /matches must have one value per row/);
  });

  it('a cohort detection has no budget and one step, "cohort"', () => {
    const cohort = createCohortDetection({
      prada: { enabled: false },
      budget: { maxQueries: 5 },
      window: { lengthMs: 60_000, bucketMs: 1000 },
      ood: { minQueries: 20 },
    });
    assert.equal(cohort.config.budget, undefined);
    assert.deepEqual(cohort.config.policy.steps, [{ action: 'escalate', tier: 'cohort' }]);
    let state = cohort.initialState(0);
    for (let i = 0; i < 30; i++) state = cohort.observe(state, { time: i, probs: probs(1) }).state;
    assert.equal(cohort.assess(state, 30).action, 'default', 'past the client budget, a cohort is not throttled');
    const unsure = { rows: 40, cols: 2, data: new Float32Array(80).fill(0.5) };
    const { assessment } = cohort.observe(state, { time: 31, probs: unsure });
    assert.equal(assessment.action, 'escalate');
    assert.equal(assessment.tier, 'cohort');
  });
});
