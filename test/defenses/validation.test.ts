import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { batchFromRows, DefenseSpecError, InvalidBatchError, MissingContextError, parseDefense } from '../../src/defenses/index.js';

const batch = (data: number[], rows: number, cols: number) => ({ rows, cols, data: Float32Array.from(data) });

describe('input validation names the row and the problem', () => {
  const defense = parseDefense('rounding');
  const cases: [string, () => unknown, RegExp][] = [
    ['NaN', () => defense.apply(batch([0.5, 0.5, NaN, 1], 2, 2)), /row 1: entry 0 is NaN/],
    ['infinity', () => defense.apply(batch([Infinity, 0], 1, 2)), /row 0: entry 0 is Infinity/],
    ['negative', () => defense.apply(batch([1.2, -0.2], 1, 2)), /row 0: entry 1 is negative/],
    ['sum', () => defense.apply(batch([0.5, 0.4, 0.3, 0.7], 2, 2)), /row 0: sums to 0\.9/],
    ['width', () => defense.apply(batch([0.5, 0.5, 1], 2, 2)), /holds 3 values, expected rows×cols = 2×2/],
    ['empty', () => defense.apply(batch([], 0, 2)), /empty/],
    ['one class', () => defense.apply(batch([1], 1, 1)), /at least 2 classes/],
    ['ragged rows', () => batchFromRows([[0.5, 0.5], [1]]), /row 1: has 1 entries, expected 2/],
    ['non-number', () => batchFromRows([[0.5, '0.5' as unknown as number]]), /row 0: entry 1 is not a number/],
  ];
  for (const [name, call, message] of cases) {
    it(`rejects ${name}`, () => assert.throws(call, (e: unknown) => e instanceof InvalidBatchError && message.test((e as Error).message)));
  }

  it('accepts rows within 1e-3 of summing to 1 and renormalises them', () => {
    const out = parseDefense('none').apply(batch([0.5004, 0.5], 1, 2));
    assert.ok(Math.abs(out.data[0] + out.data[1] - 1) < 1e-7);
  });

  it('validates logits for finiteness only', () => {
    assert.throws(() => parseDefense('none', { inputFormat: 'logits' }).apply(batch([1, NaN], 1, 2)), InvalidBatchError);
    assert.doesNotThrow(() => parseDefense('none', { inputFormat: 'logits' }).apply(batch([-3, 7], 1, 2)));
  });

  it('refuses missing context with a typed error', () => {
    const y = batch([0.6, 0.4], 1, 2);
    assert.throws(() => parseDefense('mad').apply(y), MissingContextError);
    assert.throws(() => parseDefense('mad:jacobian=full').apply(y, { surrogateProbs: y }), MissingContextError);
    assert.throws(() => parseDefense('misinformation').apply(y), MissingContextError);
  });

  it('refuses context of the wrong shape', () => {
    const y = batch([0.6, 0.4], 1, 2);
    assert.throws(() => parseDefense('mad').apply(y, { surrogateProbs: batch([0.2, 0.3, 0.5], 1, 3) }), /surrogate probabilities is 1×3, expected 1×2/);
    assert.throws(() => parseDefense('mad:jacobian=full').apply(y, { gram: new Float64Array(3) }), /Gram matrices hold 3 values/);
    assert.throws(() => parseDefense('noise').apply(y, { inputKeys: ['a', 'b'] }), /2 input keys for 1 rows/);
  });
});

describe('defense specs', () => {
  const bad: [string, RegExp][] = [
    ['fancy', /unknown defense "fancy"; allowed: none, topk/],
    ['mad:eps', /expected "param=value"/],
    ['mad:eps=abc', /"eps" must be a number > 0, got "abc"/],
    ['mad:eps=2.5', /exceeds the largest possible l1 distance/],
    ['mad:eps=1.5,norm=l2', /exceeds the largest possible l2 distance/],
    ['mad:norm=l3', /one of l1 \| l2 \| kl/],
    ['mad:eps=1,eps=2', /given twice/],
    ['topk:k=1.5', /"k" must be an integer >= 1/],
    ['rounding:decimals=9', /<= 6/],
    ['argmax:k=1', /unknown parameter "k"; it takes no parameters/],
    ['mad||none', /empty stage/],
    ['topk:k=2|rounding', /must be the last stage/],
    ['mad-argmax:oracle=extreme', /use "mad" to choose oracle yourself/],
    ['', /empty/],
  ];
  for (const [spec, message] of bad) {
    it(`rejects "${spec}" at parse time`, () =>
      assert.throws(
        () => parseDefense(spec),
        (e: unknown) => e instanceof DefenseSpecError && message.test((e as Error).message),
      ));
  }

  it('prints a canonical spec with every parameter, which parses back to the same defense', () => {
    const defense = parseDefense(' MAD-argmax : eps = 0.8 | rounding ');
    assert.equal(defense.spec, 'mad:eps=0.8,norm=l1,oracle=argmax,jacobian=last-layer|rounding:decimals=3');
    assert.equal(parseDefense(defense.spec).spec, defense.spec);
    assert.deepEqual(defense.needs, ['surrogate']);
    assert.equal(defense.keepsTop1, false);
    assert.equal(parseDefense('mad-argmax').keepsTop1, true);
  });

  it('accepts JSON configs, flat or with params, and arrays as pipelines', () => {
    assert.equal(parseDefense({ name: 'topk', k: 2 }).spec, 'topk:k=2,renormalize=false');
    assert.equal(parseDefense({ name: 'mad', params: { eps: 0.3, oracle: 'argmax' } }).spec, 'mad:eps=0.3,norm=l1,oracle=argmax,jacobian=last-layer');
    assert.equal(parseDefense(['argmax', { name: 'rounding', decimals: 1 }]).spec, 'argmax|rounding:decimals=1');
    assert.throws(() => parseDefense({ name: 'topk', k: 'two' }), /"k" must be an integer/);
    assert.throws(() => parseDefense({ nme: 'topk' } as never), /needs a "name"/);
  });

  it('declares the context each defense needs', () => {
    assert.deepEqual(parseDefense('mad:jacobian=full|noise').needs, ['surrogateGram', 'inputKey']);
    assert.deepEqual(parseDefense('misinformation|rounding').needs, ['misinformation']);
    assert.deepEqual(parseDefense('topk').needs, []);
  });
});
