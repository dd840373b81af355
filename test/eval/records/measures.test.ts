import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { batchFromRows } from '../../../src/defenses/index.js';
import { EndpointError, gatherRows, imageRequest, readProbabilities } from '../../../src/eval/endpoint/kserve-client.js';
import { accuracy, defenderOutcome, median, normaliseAnswers } from '../../../src/eval/records/measures.js';

describe('evaluation measures', () => {
  it('defender outcome: accuracy, its loss, L1 mean and median, top-1 change rate', () => {
    const undefended = batchFromRows([
      [0.9, 0.1],
      [0.2, 0.8],
      [0.6, 0.4],
      [0.3, 0.7],
    ]);
    const defended = batchFromRows([
      [0.9, 0.1], // unchanged
      [0.4, 0.6], // L1 0.4, same top-1
      [0.4, 0.6], // L1 0.4, top-1 flipped
      [0.3, 0.7],
    ]);
    const labels = [0, 1, 0, 0];
    const outcome = defenderOutcome(undefended, defended, labels);
    assert.equal(outcome.accuracy, 0.5);
    assert.ok(Math.abs(outcome.accuracyLoss - 0.25) < 1e-12);
    assert.ok(Math.abs(outcome.l1Mean - 0.2) < 1e-6);
    assert.ok(Math.abs(outcome.l1Median - 0.2) < 1e-6);
    assert.equal(outcome.top1ChangeRate, 0.25);
  });

  it('median and accuracy on plain arrays', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(accuracy([1, 2, 3], [1, 0, 3]), 2 / 3);
    assert.throws(() => accuracy([1], [1, 2]), /1 predictions for 2 labels/);
  });

  it('normalised answers are distributions, whatever the defense returned', () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.float({ min: 0, max: 1, noNaN: true }), { minLength: 3, maxLength: 3 }), { minLength: 1, maxLength: 20 }), (rows) => {
        const out = normaliseAnswers(batchFromRows(rows));
        for (let r = 0; r < rows.length; r++) {
          const row = out.data.subarray(r * 3, r * 3 + 3);
          assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5);
          assert.ok(row.every((v) => v >= 0));
        }
      }),
    );
    // top-k without renormalisation: only the top entry kept.
    assert.deepEqual(Array.from(normaliseAnswers(batchFromRows([[0, 0.5, 0]])).data), [0, 1, 0]);
    assert.deepEqual(Array.from(normaliseAnswers(batchFromRows([[0, 0]])).data), [0.5, 0.5]);
  });
});

describe('attacker client', () => {
  it('sends 8-bit images as UINT8 and gathers pool rows', () => {
    const x = Float32Array.from([0, 1 / 255, 128 / 255, 1, 0.5, 0.25]);
    const body = imageRequest(x, 2, 3);
    assert.deepEqual(body.inputs[0].shape, [2, 3]);
    assert.equal(body.inputs[0].datatype, 'UINT8');
    assert.deepEqual(body.inputs[0].data, [0, 1, 128, 255, 128, 64]);
    assert.deepEqual(
      Array.from(gatherRows(x, 3, [1, 0])),
      [1, 0.5, 0.25, 0, 1 / 255, 128 / 255].map((v) => Math.fround(v)),
    );
    assert.throws(() => imageRequest(x, 3, 3), /6 values for 3×3 images/);
  });

  it('reads flat and nested answers and says what is wrong with a bad one', () => {
    assert.deepEqual(Array.from(readProbabilities({ outputs: [{ shape: [1, 2], data: [0.25, 0.75] }] }, 1).data), [0.25, 0.75]);
    assert.deepEqual(
      Array.from(
        readProbabilities(
          {
            outputs: [
              {
                shape: [2, 2],
                data: [
                  [1, 0],
                  [0, 1],
                ],
              },
            ],
          },
          2,
        ).data,
      ),
      [1, 0, 0, 1],
    );
    assert.throws(
      () => readProbabilities({ error: 'nope' }, 1),
      (e: unknown) => e instanceof EndpointError && /without "outputs"/.test(e.message),
    );
    assert.throws(() => readProbabilities({ outputs: [{ shape: [2, 2], data: [1, 0] }] }, 1), /shape \[1, K\]/);
    assert.throws(() => readProbabilities({ outputs: [{ shape: [1, 2], data: [1] }] }, 1), /holds 1 values/);
    assert.throws(() => readProbabilities({ outputs: [{ shape: [1, 2], data: [1, 'x'] }] }, 1), /non-number/);
  });
});
