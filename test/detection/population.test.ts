import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DetectionConfigError } from '../../src/detection/errors.js';
import {
  calibratePopulation,
  calibratePopulationHoda,
  CLASSES_AT,
  countsLength,
  initialAlarmState,
  LOW,
  MATCHED,
  populationVerdicts,
  Q,
  resolvePopulationOptions,
  stepAlarm,
  summarise,
  totalVariation,
} from '../../src/detection/above/population.js';
import { rng } from './synthetic.js';

/** `rows` rows over `classes` classes, row r's top class `label(r)` with probability `confidence(r)`. */
function probsOf(rows: number, classes: number, label: (r: number) => number, confidence: (r: number) => number) {
  const data = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) {
    const c = confidence(r);
    data.fill((1 - c) / (classes - 1), r * classes, (r + 1) * classes);
    data[r * classes + label(r)] = c;
  }
  return { rows, cols: classes, data };
}

/** The population's HODA verdict on a window of rows of hardness `h` (confident answers, the classes in turn). */
function hodaVerdict(config: ReturnType<typeof resolvePopulationOptions>, layout: { classes: number; bins: number }, h: Int8Array, confidence: number) {
  const probs = probsOf(
    h.length,
    layout.classes,
    (r) => r % layout.classes,
    () => confidence,
  );
  return populationVerdicts(config, layout, summarise(layout, 0.7, probs, h)).verdicts.find((v) => v.detector === 'hoda')!;
}

const MINUTE = 60_000;

describe('population counts and detectors', () => {
  it('summarises a request into additive counts: queries, unsure, matched, confidence, classes, hardness', () => {
    const layout = { classes: 4, bins: 3 };
    const probs = probsOf(
      4,
      4,
      (r) => r % 4,
      (r) => [0.9, 0.5, 0.95, 0.6][r],
    );
    const counts = summarise(layout, 0.7, probs, Int8Array.of(0, 2, -1, 1), Uint8Array.of(1, 0, 0, 1));
    assert.equal(counts.length, countsLength(layout));
    assert.equal(counts[Q], 4);
    assert.equal(counts[LOW], 2, 'two rows under 0.7');
    assert.equal(counts[MATCHED], 2);
    assert.deepEqual(Array.from(counts.subarray(CLASSES_AT, CLASSES_AT + 4)), [1, 1, 1, 1]);
    assert.deepEqual(Array.from(counts.subarray(CLASSES_AT + 4)), [1, 1, 1], 'the unknown hardness (-1) is skipped');
  });

  it('flags the unsure share, the class distance and the match share only once minQueries are in', () => {
    const config = resolvePopulationOptions({ minQueries: 100, ood: { maxRate: 0.15 }, classes: { maxDistance: 0.3 }, matches: { maxRate: 0.05 } });
    const layout = { classes: 10, bins: 0 };
    const benign = summarise(
      layout,
      0.7,
      probsOf(
        300,
        10,
        (r) => r % 10,
        (r) => (r % 50 === 0 ? 0.5 : 0.95),
      ),
    );
    const found = populationVerdicts(config, layout, benign);
    assert.equal(found.anyFlagged, false, JSON.stringify(found.verdicts));
    assert.ok(found.maxLevel < 0.8, 'benign traffic is calm');
    // A thief: unsure on 40% of its queries, all of them in two classes.
    const thief = summarise(
      layout,
      0.7,
      probsOf(
        99,
        10,
        (r) => r % 2,
        (r) => (r % 5 < 2 ? 0.4 : 0.9),
      ),
      undefined,
      new Uint8Array(99).fill(1),
    );
    const early = populationVerdicts(config, layout, thief);
    assert.equal(early.anyFlagged, false, 'below minQueries nothing is judged');
    assert.equal(early.maxLevel, 0);
    const more = summarise(
      layout,
      0.7,
      probsOf(
        1,
        10,
        () => 0,
        () => 0.4,
      ),
    );
    const total = thief.map((v, i) => v + more[i]);
    const judged = populationVerdicts(config, layout, total);
    const by = Object.fromEntries(judged.verdicts.map((v) => [v.detector, v]));
    assert.equal(by.ood.flagged, true);
    assert.equal(by.classes.flagged, true);
    assert.equal(by.matches.flagged, true);
    assert.ok(Math.abs(by.classes.score - 0.8) < 1e-9, 'two classes of ten: total variation 0.8');
  });

  it('judges the hardness histogram by total variation to the benign one, once minQueries known values are in', () => {
    const config = resolvePopulationOptions({ minQueries: 100, hoda: { reference: [7, 2, 1], maxDistance: 0.1 } });
    assert.deepEqual(config.hoda.reference, [0.7, 0.2, 0.1], 'normalised');
    const layout = { classes: 2, bins: 3 };
    const benignHardness = (n: number) => Int8Array.from({ length: n }, (_, i) => (i % 10 < 7 ? 0 : i % 10 < 9 ? 1 : 2));
    const hardHardness = (n: number) => Int8Array.from({ length: n }, (_, i) => (i % 10 < 2 ? 0 : 2));
    const probs = (n: number) =>
      probsOf(
        n,
        2,
        (r) => r % 2,
        () => 0.9,
      );
    const hodaOf = (counts: Float64Array) => populationVerdicts(config, layout, counts).verdicts.find((v) => v.detector === 'hoda')!;
    assert.equal(hodaOf(summarise(layout, 0.7, probs(60), hardHardness(60))).flagged, false, 'under minQueries: not judged');
    const hard = hodaOf(summarise(layout, 0.7, probs(500), hardHardness(500)));
    assert.ok(Math.abs(hard.score - 0.7) < 1e-9, `total variation ${hard.score}`);
    assert.equal(hard.flagged, true);
    assert.equal(hodaOf(summarise(layout, 0.7, probs(2000), benignHardness(2000))).flagged, false);
    // A thief's hard queries mixed half and half into benign ones: the Pearson correlation of the
    // histograms stays high, the total variation does not.
    const mixed = Int8Array.from({ length: 1000 }, (_, i) => (i % 2 ? hardHardness(10)[i % 10] : benignHardness(10)[i % 10]));
    assert.equal(hodaOf(summarise(layout, 0.7, probs(1000), mixed)).flagged, true);
    assert.equal(resolvePopulationOptions({}).hoda.enabled, false, 'off without a calibration');
    assert.throws(() => resolvePopulationOptions({ hoda: { reference: [1, 1], maxDistance: 2 } }), /hoda\.maxDistance/);
  });

  it('turns HODA off with hoda.enabled false alone; reference and maxDistance are needed only while it is on', () => {
    const off = resolvePopulationOptions({ hoda: { enabled: false } });
    assert.equal(off.hoda.enabled, false);
    assert.equal(off.hoda.bins, 0, 'no hardness bins in the counts');
    assert.equal(resolvePopulationOptions({ hoda: { enabled: false, reference: [1, 1] } }).hoda.enabled, false);
    // Still checked when given while off: a typo is not silently kept for the day it is turned on.
    assert.throws(() => resolvePopulationOptions({ hoda: { enabled: false, maxDistance: 2 } }), /hoda\.maxDistance must be a number > 0 and < 1/);
    assert.throws(() => resolvePopulationOptions({ hoda: { enabled: true } as never }), /population option hoda\.reference must be/);
    assert.throws(() => resolvePopulationOptions({ hoda: { maxDistance: 0.1 } as never }), /population option hoda\.reference must be .*enabled: false/);
    assert.throws(() => resolvePopulationOptions({ hoda: { reference: [1, 1] } as never }), /population option hoda\.maxDistance must be .*enabled: false/);
    const on = resolvePopulationOptions({ hoda: { enabled: true, reference: [1, 3], maxDistance: 0.2 } });
    assert.deepEqual([on.hoda.enabled, on.hoda.bins, on.hoda.maxDistance], [true, 2, 0.2]);
  });

  it('total variation against a reference, uniform by default', () => {
    assert.equal(totalVariation([5, 5], undefined), 0);
    assert.equal(totalVariation([10, 0], undefined), 0.5);
    assert.ok(Math.abs(totalVariation([10, 0], [0.8, 0.2]) - 0.2) < 1e-12);
    assert.equal(totalVariation([0, 0], undefined), 0);
  });

  it('validates the options, saying what to write', () => {
    assert.throws(
      () => resolvePopulationOptions({ ood: { maxRate: 2 } }),
      (e: Error) => e instanceof DetectionConfigError && /ood\.maxRate must be a number ≥ 0 and < 1/.test(e.message),
    );
    assert.throws(() => resolvePopulationOptions({ youngQueries: 0 }), /youngQueries must be an integer ≥ 1/);
    assert.throws(() => resolvePopulationOptions({ nope: 1 } as never), /unknown population option nope/);
    assert.throws(() => resolvePopulationOptions({ window: { lengthMs: 600_000, bucketMs: 1000 } }), /use at most 100/);
    assert.throws(() => resolvePopulationOptions({ classes: { reference: [0, 0] } }), /classes\.reference/);
    const config = resolvePopulationOptions({ classes: { reference: [2, 6] }, ood: { maxRate: 0.1 } });
    assert.deepEqual(config.classes.reference, [0.25, 0.75], 'normalised');
    assert.equal(config.suspectRate, 0.1, 'suspectRate defaults to ood.maxRate');
  });

  it('names the option, what was given and what to write; unknown keys list the allowed ones at their level', () => {
    const refused = (options: object, message: RegExp) =>
      assert.throws(
        () => resolvePopulationOptions(options as never),
        (e: unknown) => e instanceof DetectionConfigError && message.test((e as Error).message),
        `expected ${message}`,
      );
    refused({ ood: { maxRate: 2 } }, /^population option ood\.maxRate must be a number ≥ 0 and < 1, e\.g\. maxRate: 0\.15 .*, got 2$/);
    refused({ alarm: { calmMs: '60000' } }, /^population option alarm\.calmMs must be an integer ≥ 0, e\.g\. calmMs: 600000, got "60000"$/);
    refused({ matches: { enabled: 'yes' } }, /^population option matches\.enabled must be true or false, got "yes"$/);
    refused({ window: { lengthMs: 60_000, bucketMs: 120_000 } }, /^population option window\.bucketMs must be an integer ≥ 100 and ≤ 60000 .*, got 120000$/);
    refused({ hoda: { reference: [1, 1] } }, /^population option hoda\.maxDistance must be a number > 0 and < 1, .*, got undefined$/);
    refused({ hoda: { reference: [1, -1], maxDistance: 0.1 } }, /^population option hoda\.reference must be the benign hardness histogram, .*, got \[1,-1\]$/);
    refused({ classes: 'uniform' }, /^population option classes must be an object with some of: enabled, maxDistance, reference, got "uniform"$/);
    refused({ ood: { rate: 0.1 } }, /^unknown population option ood\.rate; write one of: enabled, confidenceThreshold, maxRate$/);
    refused({ young: 1 }, /^unknown population option young; write one of: window, minQueries, youngQueries, ood, hoda, classes, matches, alarm, suspectRate$/);
  });
});

describe('the population alarm: hysteresis', () => {
  const alarm = { release: 0.8, calmMs: 10 * MINUTE };

  it('starts at the first flag and ends only after calmMs below release', () => {
    let state = initialAlarmState();
    let step = stepAlarm(alarm, state, 0, false, 0.5);
    assert.equal(step.state.on, false);
    step = stepAlarm(alarm, step.state, 1000, true, 1.5);
    assert.equal(step.started, true);
    assert.equal(step.state.since, 1000);
    state = step.state;
    // Calm from 2 min on: still on at 11 min 59 s, off at 12 min.
    step = stepAlarm(alarm, state, 2 * MINUTE, false, 0.3);
    assert.equal(step.state.on, true);
    step = stepAlarm(alarm, step.state, 12 * MINUTE - 1, false, 0.3);
    assert.equal(step.state.on, true);
    step = stepAlarm(alarm, step.state, 12 * MINUTE, false, 0.3);
    assert.equal(step.ended, true);
    assert.equal(step.state.on, false);
  });

  it('does not flap: evidence between release and the threshold holds the alarm and restarts the calm clock', () => {
    let { state } = stepAlarm(alarm, initialAlarmState(), 0, true, 1.2);
    ({ state } = stepAlarm(alarm, state, MINUTE, false, 0.5));
    assert.equal(state.calmT, MINUTE);
    ({ state } = stepAlarm(alarm, state, 9 * MINUTE, false, 0.9));
    assert.equal(state.calmT, -1, 'hovering just under the threshold is not calm');
    ({ state } = stepAlarm(alarm, state, 15 * MINUTE, false, 0.5));
    assert.equal(state.on, true, 'the calm clock restarted at 15 min');
    const again = stepAlarm(alarm, state, 16 * MINUTE, true, 1.1);
    assert.equal(again.started, false, 'a flag during an alarm is no new alarm');
    assert.equal(again.state.since, 0);
    // Around the threshold, off → on → off never happens without calmMs of calm in between.
    let s = initialAlarmState();
    let changes = 0;
    const random = rng(3);
    for (let t = 0; t < 60 * MINUTE; t += 10_000) {
      const level = 0.85 + 0.3 * random();
      const r = stepAlarm(alarm, s, t, level > 1, level);
      if (r.started || r.ended) changes++;
      s = r.state;
    }
    assert.equal(changes, 1, 'one start, no end while the level hovers around 1');
  });
});

describe('calibratePopulation', () => {
  it('sets the thresholds a margin above what benign draws of minQueries rows reach', () => {
    const benign = probsOf(
      5000,
      10,
      (r) => r % 10,
      (r) => (r % 25 === 0 ? 0.5 : 0.97),
    );
    const calibration = calibratePopulation(benign, { windowQueries: 200, draws: 100, margin: 0.05 });
    assert.ok(Math.abs(calibration.benignRate - 0.04) < 1e-9);
    assert.ok(calibration.draws.maxRate >= 0.04 && calibration.draws.maxRate < 0.12, JSON.stringify(calibration.draws));
    assert.ok(Math.abs(calibration.options.ood.maxRate - (calibration.draws.maxRate + 0.05)) < 1e-12);
    assert.equal(calibration.options.classes.reference.length, 10);
    assert.ok(calibration.options.classes.maxDistance > 0.05 && calibration.options.classes.maxDistance < 0.3);
    const config = resolvePopulationOptions({ minQueries: 200, ...calibration.options });
    // A benign window of the same traffic is not flagged.
    const layout = { classes: 10, bins: 0 };
    assert.equal(populationVerdicts(config, layout, summarise(layout, 0.7, benign)).anyFlagged, false);
    assert.throws(
      () =>
        calibratePopulation(
          probsOf(
            10,
            10,
            () => 0,
            () => 0.9,
          ),
        ),
      /at least windowQueries/,
    );
  });

  it('with hardness: a HODA threshold at the window size, from draws independent of the reference', () => {
    const random = rng(11);
    const rows = 4000;
    const benign = probsOf(
      rows,
      10,
      (r) => r % 10,
      () => 0.97,
    );
    const draw = (weights: number[]) => {
      let u = random();
      for (let b = 0; b < weights.length; b++) if ((u -= weights[b]) < 0) return b;
      return weights.length - 1;
    };
    // Benign hardness: mostly easy.
    const benignWeights = [0.5, 0.2, 0.1, 0.08, 0.06, 0.03, 0.02, 0.01];
    const hardness = Int8Array.from({ length: rows }, () => draw(benignWeights));
    const calibration = calibratePopulation(benign, { windowQueries: 200, draws: 100, hardness, bins: 8 });
    const hoda = calibration.options.hoda!;
    assert.equal(hoda.reference.length, 8);
    assert.ok(hoda.maxDistance > calibration.draws.maxHardnessDistance!, 'the margin on top');
    const config = resolvePopulationOptions({ minQueries: 200, ...calibration.options });
    const layout = { classes: 10, bins: 8 };
    const hodaOf = (h: Int8Array) => hodaVerdict(config, layout, h, 0.97);
    // Fresh benign traffic (another sample) is calm; a thief's hard queries are not, even mixed half and half.
    assert.equal(hodaOf(Int8Array.from({ length: 1500 }, () => draw(benignWeights))).flagged, false);
    const thiefWeights = [0.1, 0.1, 0.1, 0.1, 0.15, 0.15, 0.15, 0.15];
    assert.equal(hodaOf(Int8Array.from({ length: 1500 }, (_, i) => draw(i % 2 ? thiefWeights : benignWeights))).flagged, true);
    assert.throws(() => calibratePopulation(benign, { windowQueries: 3000, hardness, bins: 8 }), /2 × windowQueries/);
  });

  it('HODA alone (a proxy with checkpoints and held-out inputs, no answers): the same reference, a threshold that tells a thief from benign traffic', () => {
    const random = rng(12);
    const draw = (weights: number[]) => {
      let u = random();
      for (let b = 0; b < weights.length; b++) if ((u -= weights[b]) < 0) return b;
      return weights.length - 1;
    };
    const benignWeights = [0.6, 0.2, 0.1, 0.06, 0.04];
    // Unknown hardness (-1) is left out of the calibration.
    const hardness = Int8Array.from({ length: 3000 }, (_, i) => (i % 10 === 9 ? -1 : draw(benignWeights)));
    const calibration = calibratePopulationHoda(hardness, 5, { windowQueries: 200, draws: 100 });
    assert.equal(calibration.rows, 2700);
    const known = Array.from(hardness).filter((h) => h >= 0);
    const expected = [0, 1, 2, 3, 4].map((b) => known.filter((h) => h === b).length / known.length);
    calibration.options.reference.forEach((v, b) => assert.ok(Math.abs(v - expected[b]) < 1e-12, `bin ${b}: ${v} vs ${expected[b]}`));
    assert.ok(Math.abs(calibration.options.maxDistance - (calibration.maxHardnessDistance + 0.05)) < 1e-12, 'the margin on top of the benign draws');
    // The same reference as calibratePopulation's (its threshold comes from draws of the same seeded sequence, continued).
    const withAnswers = calibratePopulation(
      probsOf(
        hardness.length,
        4,
        (r) => r % 4,
        () => 0.9,
      ),
      { windowQueries: 200, draws: 100, hardness, bins: 5 },
    );
    assert.deepEqual(withAnswers.options.hoda!.reference, calibration.options.reference);
    const config = resolvePopulationOptions({ minQueries: 200, hoda: calibration.options });
    const layout = { classes: 4, bins: 5 };
    const flagged = (h: Int8Array) => hodaVerdict(config, layout, h, 0.9).flagged;
    assert.equal(flagged(Int8Array.from({ length: 1000 }, () => draw(benignWeights))), false);
    assert.equal(flagged(Int8Array.from({ length: 1000 }, () => draw([0.1, 0.15, 0.25, 0.25, 0.25]))), true);
    assert.throws(
      () => calibratePopulationHoda(hardness.subarray(0, 300), 5, { windowQueries: 200 }),
      /2 × windowQueries \(400\) known hardness values, got 27\d/,
    );
  });
});
