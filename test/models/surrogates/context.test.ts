import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { parseDefense } from '../../../src/defenses/index.js';
import { MissingProviderError, ModelInputError, Surrogate, computeDefenseContext, inputKeys, predictProbs } from '../../../src/models/index.js';
import { inputs, setUpBackend, tinyMlp, withoutLeaks } from '../helpers.js';

before(setUpBackend);

describe('computeDefenseContext', () => {
  it('fills exactly the fields the needs ask for', async () => {
    const surrogate = new Surrogate(tinyMlp(31));
    const misinformation = tinyMlp(32);
    const x = inputs(4, 16);
    const providers = { surrogate, misinformation };
    assert.deepEqual(computeDefenseContext([], x, 4, providers), {});
    const probsOnly = computeDefenseContext(['surrogate'], x, 4, providers);
    assert.deepEqual(Object.keys(probsOnly), ['surrogateProbs']);
    assert.deepEqual(Array.from(probsOnly.surrogateProbs!.data), Array.from(predictProbs(surrogate.model, x, 4)));
    const all = await withoutLeaks(() => computeDefenseContext(['surrogateGram', 'misinformation', 'inputKey', 'surrogateGram'], x, 4, providers));
    assert.deepEqual(Object.keys(all).sort(), ['gram', 'inputKeys', 'misinformationProbs']);
    assert.equal(all.gram!.length, 4 * 3 * 3);
    assert.deepEqual(Array.from(all.gram!), Array.from(surrogate.gram(x, 4)));
    assert.deepEqual(Array.from(all.misinformationProbs!.data), Array.from(predictProbs(misinformation, x, 4)));
    assert.equal(all.inputKeys!.length, 4);
    surrogate.dispose();
    misinformation.dispose();
  });

  it('accepts any object with probs() as the misinformation model', () => {
    const fixed = { rows: 2, cols: 3, data: new Float32Array([0.2, 0.3, 0.5, 0.1, 0.1, 0.8]) };
    const context = computeDefenseContext(['misinformation'], inputs(2, 16), 2, { misinformation: { probs: () => fixed } });
    assert.equal(context.misinformationProbs, fixed);
  });

  it('says whose fault a missing piece is', () => {
    assert.throws(
      () => computeDefenseContext(['inputKey'], undefined, 2),
      (e: unknown) => e instanceof ModelInputError && /needs the model inputs \(for inputKey\)/.test(e.message),
    );
    assert.throws(
      () => computeDefenseContext(['surrogate'], inputs(1, 16), 1),
      (e: unknown) => e instanceof MissingProviderError && /no surrogate model was configured/.test(e.message),
    );
    assert.throws(() => computeDefenseContext(['misinformation'], inputs(1, 16), 1, {}), MissingProviderError);
    const surrogate = new Surrogate(tinyMlp());
    assert.throws(() => computeDefenseContext(['surrogateGram'], inputs(1, 15), 1, { surrogate }), ModelInputError);
    surrogate.dispose();
  });

  it('feeds real defenses: MAD with the full Jacobian and with the last layer', () => {
    const surrogate = new Surrogate(tinyMlp(33));
    const x = inputs(5, 16, 9);
    const victim = { rows: 5, cols: 3, data: predictProbs(tinyMlp(34), x, 5) };
    for (const spec of ['mad:eps=0.5,jacobian=full', 'mad:eps=0.5', 'mad-argmax:eps=0.5,jacobian=full']) {
      const defense = parseDefense(spec);
      const out = defense.apply(victim, computeDefenseContext(defense.needs, x, 5, { surrogate }));
      assert.equal(out.rows, 5);
      for (let r = 0; r < 5; r++) {
        const row = Array.from(out.data.subarray(r * 3, r * 3 + 3));
        assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-4, `${spec}: row ${r} sums to 1`);
        const l1 = row.reduce((sum, v, k) => sum + Math.abs(v - victim.data[r * 3 + k]), 0);
        assert.ok(l1 <= 0.5 + 1e-4, `${spec}: row ${r} moved ${l1} > eps`);
      }
    }
    surrogate.dispose();
  });
});

describe('inputKeys', () => {
  it('is a SHA-256 of the row bytes: equal rows equal keys, different rows different keys', () => {
    const x = new Float32Array([1, 2, 3, 1, 2, 3, 1, 2, 4]);
    const keys = inputKeys(x, 3);
    assert.match(keys[0], /^[0-9a-f]{64}$/);
    assert.equal(keys[0], keys[1]);
    assert.notEqual(keys[0], keys[2]);
    // Views with an offset hash their own rows only.
    assert.deepEqual(inputKeys(x.subarray(3), 2), keys.slice(1));
    assert.throws(() => inputKeys(x, 2), ModelInputError);
  });
});
