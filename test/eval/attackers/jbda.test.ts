import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { DEFAULT_JBDA, presetConfig, validateConfig, type JbdaVariant } from '../../../src/eval/config.js';
import { jacobianStep, roundStep, runJbdaAttack, substituteTargets, targetedPgd } from '../../../src/eval/attackers/jbda.js';
import type { InferenceClient } from '../../../src/eval/endpoint/kserve-client.js';
import { createModel, initBackend, predictProbs, tf } from '../../../src/models/index.js';
import { syntheticDataset } from '../helpers/synthetic-data.js';

const FEATURES = 64;
const CLASSES = 4;

/** A deterministic "victim": softmax of a fixed linear map, counting every row it answers. */
function countingVictim(): InferenceClient & { rowsSeen: Float32Array[] } {
  const weights = Float32Array.from({ length: FEATURES * CLASSES }, (_, i) => Math.sin(i * 12.9898) * 2);
  let requests = 0;
  const rowsSeen: Float32Array[] = [];
  return {
    rowsSeen,
    get requests() {
      return requests;
    },
    async infer(x, rows, features) {
      requests += 1;
      assert.equal(features, FEATURES);
      assert.equal(x.length, rows * features);
      const out = new Float32Array(rows * CLASSES);
      for (let r = 0; r < rows; r++) {
        const row = x.slice(r * features, (r + 1) * features);
        rowsSeen.push(row);
        const logits = Array.from({ length: CLASSES }, (_, c) => row.reduce((sum, v, f) => sum + v * weights[f * CLASSES + c], 0));
        const max = Math.max(...logits);
        const exp = logits.map((l) => Math.exp(l - max));
        const total = exp.reduce((a, b) => a + b, 0);
        exp.forEach((e, c) => (out[r * CLASSES + c] = e / total));
      }
      return { rows, cols: CLASSES, data: out };
    },
  };
}

function attackOptions(variant: JbdaVariant, client: InferenceClient, budget: number) {
  const data = syntheticDataset(7, { train: 150, test: 60, features: FEATURES, classes: CLASSES, noise: 0.3 });
  const quick = presetConfig('quick');
  return {
    data,
    options: {
      variant,
      client,
      budget,
      requestRows: 64,
      classes: CLASSES,
      inputShape: [FEATURES],
      knockoff: { ...quick.knockoffTraining, epochs: 2, batchSize: 32 },
      labels: ['soft' as const],
      test: { x: data.test.x, rows: data.test.rows, labels: data.test.labels, victimTop1: data.test.labels },
      seed: 5,
      seedSet: { x: data.train.x.slice(0, 100 * FEATURES), rows: 100 },
      settings: { ...DEFAULT_JBDA, roundEpochs: 1 },
    },
  };
}

describe('Jacobian-based dataset augmentation', () => {
  // The fastest backend that starts (wasm here): the attack trains a substitute every round.
  before(() => initBackend({ log: () => {} }));

  for (const [variant, budget] of [
    ['jbda', 250],
    ['jbself', 331],
    ['jbtop3', 400],
  ] as const) {
    it(`${variant}: spends exactly ${budget} queries on in-range points of the right shape, freeing its tensors`, async () => {
      const client = countingVictim();
      const { options } = attackOptions(variant, client, budget);
      const tensorsBefore = tf.memory().numTensors;
      const result = await runJbdaAttack(options);
      assert.equal(tf.memory().numTensors, tensorsBefore);
      assert.equal(result.queries, budget);
      assert.equal(client.rowsSeen.length, budget, 'every synthetic point went through the endpoint, and no more');
      assert.equal(result.transfer.x.length, budget * FEATURES);
      assert.equal(result.transfer.answers.rows, budget);
      for (const row of client.rowsSeen) {
        assert.equal(row.length, FEATURES);
        assert.ok(
          row.every((v) => v >= 0 && v <= 1),
          'a synthetic point left the pixel range',
        );
      }
      // The first 100 queries are the seed set; the next ones lie near it.
      const seed = options.seedSet.x;
      assert.deepEqual(
        client.rowsSeen.slice(0, 100).map((r) => Array.from(r)),
        Array.from({ length: 100 }, (_, i) => Array.from(seed.subarray(i * FEATURES, (i + 1) * FEATURES))),
      );
      const synthetic = client.rowsSeen.slice(100, 200);
      const maxStep = DEFAULT_JBDA[variant === 'jbtop3' ? 'pgd' : 'lambda'] as number | { radius: number };
      const radius = typeof maxStep === 'number' ? maxStep : maxStep.radius;
      for (const row of synthetic) {
        const nearest = Math.min(...Array.from({ length: 100 }, (_, i) => row.reduce((m, v, f) => Math.max(m, Math.abs(v - seed[i * FEATURES + f])), 0)));
        assert.ok(nearest <= radius + 1 / 255 + 1e-6, `a synthetic point is ${nearest} from every seed point`);
      }
      assert.ok(
        synthetic.some((row, i) => row.some((v, f) => v !== client.rowsSeen[i][f])),
        'the synthetic points must move',
      );
      assert.equal(result.outcomes.length, 1);
      assert.equal(result.requests, client.requests);
      if (variant === 'jbtop3' && budget === 400) {
        // One round exactly: three targeted points (one query per target class) for each seed point.
        const perSeed = new Array<number>(100).fill(0);
        for (const row of client.rowsSeen.slice(100)) {
          const distances = Array.from({ length: 100 }, (_, i) => row.reduce((m, v, f) => Math.max(m, Math.abs(v - seed[i * FEATURES + f])), 0));
          perSeed[distances.indexOf(Math.min(...distances))] += 1;
        }
        assert.ok(
          perSeed.every((n) => n === 3),
          `queries per seed point: ${perSeed.join(',')}`,
        );
      }
    });
  }

  it('λ flips its sign every τ rounds', () => {
    const signs = Array.from({ length: 12 }, (_, r) => Math.sign(roundStep({ lambda: 0.1, flipEvery: 5 }, r)));
    assert.deepEqual(signs, [1, 1, 1, 1, 1, -1, -1, -1, -1, -1, 1, 1]);
  });

  it('jbda steps up the substitute’s loss on the answer and jbself down', () => {
    const model = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 3, hidden: [16] });
    try {
      const { data } = attackOptions('jbda', countingVictim(), 100);
      const rows = 40;
      const x = data.train.x.slice(0, rows * FEATURES);
      const targets = new Float32Array(rows * CLASSES);
      for (let r = 0; r < rows; r++) targets[r * CLASSES + data.train.labels[r]] = 1;
      const loss = (points: Float32Array) => {
        const p = predictProbs(model, points, rows);
        let total = 0;
        for (let r = 0; r < rows; r++) total -= Math.log(p[r * CLASSES + data.train.labels[r]]);
        return total / rows;
      };
      const before = loss(x);
      assert.ok(loss(jacobianStep(model, x, targets, rows, 0.02)) > before);
      assert.ok(loss(jacobianStep(model, x, targets, rows, -0.02)) < before);
    } finally {
      model.dispose();
    }
  });

  it('jbtop-k’s targeted PGD moves the substitute toward the target class, inside the radius', () => {
    const model = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 4, hidden: [16] });
    try {
      const { data } = attackOptions('jbtop3', countingVictim(), 100);
      const rows = 60;
      const x = data.train.x.slice(0, rows * FEATURES);
      const before = predictProbs(model, x, rows);
      // Target: the substitute's second most probable class of each row.
      const target = Int32Array.from({ length: rows }, (_, r) => {
        const top = substituteTargets(before, r, CLASSES, -1, 2);
        return top[1];
      });
      const tensorsBefore = tf.memory().numTensors;
      const moved = targetedPgd(model, x, target, CLASSES, DEFAULT_JBDA.pgd);
      assert.equal(tf.memory().numTensors, tensorsBefore);
      const after = predictProbs(model, moved, rows);
      let gained = 0;
      for (let r = 0; r < rows; r++) {
        if (after[r * CLASSES + target[r]] > before[r * CLASSES + target[r]]) gained += 1;
        for (let f = 0; f < FEATURES; f++) {
          const v = moved[r * FEATURES + f];
          assert.ok(v >= 0 && v <= 1 && Math.abs(v - x[r * FEATURES + f]) <= DEFAULT_JBDA.pgd.radius + 1e-6);
        }
      }
      assert.equal(gained, rows, `the target class gained probability on ${gained} of ${rows} rows`);
    } finally {
      model.dispose();
    }
  });

  it('substituteTargets skips the answer and ranks by the substitute', () => {
    const probs = Float32Array.from([0.1, 0.4, 0.3, 0.2]);
    assert.deepEqual(substituteTargets(probs, 0, 4, 1, 3), [2, 3, 0]);
    assert.deepEqual(substituteTargets(probs, 0, 4, 2, 2), [1, 3]);
  });

  it('config: jbda settings validated, attacker families accepted as policies', () => {
    const config = validateConfig({ preset: 'quick', policies: ['random', 'jbtop3'], jbda: { roundEpochs: 5, pgd: { iterations: 4 } } });
    assert.deepEqual(config.policies, ['random', 'jbtop3']);
    assert.equal(config.jbda.roundEpochs, 5);
    assert.equal(config.jbda.pgd.iterations, 4);
    assert.equal(config.jbda.pgd.radius, 0.1);
    assert.throws(() => validateConfig({ preset: 'quick', jbda: { lambda: -1 } }), /jbda.lambda/);
    assert.throws(() => validateConfig({ preset: 'quick', jbda: { steps: 3 } }), /jbda.steps/);
  });
});
