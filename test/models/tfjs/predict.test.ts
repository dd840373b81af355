import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { ModelInputError, predictClasses, predictLogits, predictProbs, tf } from '../../../src/models/index.js';
import { inputs, setUpBackend, tinyLenet, tinyMlp, withoutLeaks } from '../helpers.js';

before(setUpBackend);

/** The layers API's own forward, independent of the plan the project runs. */
function reference(model: tf.LayersModel, x: Float32Array, rows: number): Float32Array {
  return tf.tidy(
    () => tf.softmax(model.predict(tf.tensor(x, [rows, ...(model.inputs[0].shape.slice(1) as number[])])) as tf.Tensor).dataSync() as Float32Array,
  );
}

describe('predictProbs', () => {
  for (const [name, make, width] of [
    ['mlp', tinyMlp, 16],
    ['lenet', tinyLenet, 144],
  ] as const) {
    it(`matches the layers API on the ${name} and rows sum to 1`, async () => {
      const model = make();
      const x = inputs(7, width);
      const probs = await withoutLeaks(() => predictProbs(model, x, 7));
      const expected = reference(model, x, 7);
      assert.equal(probs.length, 7 * 3);
      for (let i = 0; i < probs.length; i++) assert.ok(Math.abs(probs[i] - expected[i]) < 1e-5, `entry ${i}: ${probs[i]} vs ${expected[i]}`);
      for (let r = 0; r < 7; r++) assert.ok(Math.abs(probs[r * 3] + probs[r * 3 + 1] + probs[r * 3 + 2] - 1) < 1e-5);
      model.dispose();
    });
  }

  it('gives the same answer whatever the chunk size', async () => {
    const model = tinyMlp();
    const x = inputs(10, 16, 3);
    const whole = predictProbs(model, x, 10);
    const chunked = await withoutLeaks(() => predictProbs(model, x, 10, { chunkRows: 3 }));
    assert.deepEqual(Array.from(chunked), Array.from(whole));
    model.dispose();
  });

  it('agrees with predictLogits and predictClasses', () => {
    const model = tinyMlp();
    const x = inputs(5, 16, 4);
    const logits = predictLogits(model, x, 5);
    const probs = predictProbs(model, x, 5);
    const classes = predictClasses(model, x, 5);
    for (let r = 0; r < 5; r++) {
      const row = Array.from(probs.subarray(r * 3, r * 3 + 3));
      assert.equal(classes[r], row.indexOf(Math.max(...row)));
      const max = Math.max(...logits.subarray(r * 3, r * 3 + 3));
      const z = Array.from(logits.subarray(r * 3, r * 3 + 3), (v) => Math.exp(v - max));
      const sum = z.reduce((a, b) => a + b, 0);
      z.forEach((v, k) => assert.ok(Math.abs(v / sum - row[k]) < 1e-5));
    }
    model.dispose();
  });

  it('rejects inputs of the wrong length or with non-finite values', () => {
    const model = tinyMlp();
    assert.throws(
      () => predictProbs(model, new Float32Array(15), 1),
      (e: unknown) => e instanceof ModelInputError && /15 values; 1 rows of 16/.test(e.message),
    );
    const bad = inputs(2, 16);
    bad[20] = Number.NaN;
    assert.throws(
      () => predictProbs(model, bad, 2),
      (e: unknown) => e instanceof ModelInputError && /row 1/.test(e.message),
    );
    model.dispose();
  });
});
