/** Defense parameters and configs checked by their schemas: every message names the field, what was given and what to write. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DefenseSpecError, parseDefense } from '../../src/defenses/index.js';

const refused = (run: () => unknown, message: RegExp) =>
  assert.throws(run, (e: unknown) => e instanceof DefenseSpecError && message.test((e as Error).message), `expected ${message}`);

describe('defense parameter schemas', () => {
  it('refuses unknown parameters, listing the allowed ones from the schema', () => {
    refused(
      () => parseDefense('mad:budget=1,radius=2'),
      /^mad: unknown parameters "budget", "radius"; allowed: eps \(a number > 0\), norm \(one of l1 \| l2 \| kl\), oracle \(one of extreme \| argmax\), jacobian \(one of last-layer \| full\)$/,
    );
    refused(() => parseDefense({ name: 'topk', n: 2 }), /^topk: unknown parameter "n"; allowed: k \(an integer >= 1\), renormalize \(true or false\)$/);
  });

  it('names a JSON value of the wrong type with what was given', () => {
    refused(() => parseDefense({ name: 'rounding', decimals: true }), /^rounding: parameter "decimals" must be an integer >= 0 and <= 6, got true$/);
    refused(() => parseDefense({ name: 'mad', params: { norm: 2 } }), /^mad: parameter "norm" must be one of l1 \| l2 \| kl, got 2$/);
    refused(() => parseDefense({ name: 'mad', eps: -1 }), /^mad: parameter "eps" must be a number > 0, got -1$/);
  });

  it('reads booleans and numbers from spec text, and enum values in any case', () => {
    assert.equal(parseDefense('topk:k=2,renormalize=1').spec, 'topk:k=2,renormalize=true');
    assert.equal(parseDefense('topk:renormalize=false').spec, 'topk:k=1,renormalize=false');
    assert.equal(parseDefense({ name: 'mad', norm: 'L2', eps: '1' }).spec, 'mad:eps=1,norm=l2,oracle=extreme,jacobian=last-layer');
    refused(() => parseDefense('topk:renormalize=yes'), /^topk: parameter "renormalize" must be true or false, got "yes"$/);
    refused(() => parseDefense('rounding:decimals='), /^rounding: parameter "decimals" must be an integer >= 0 and <= 6, got ""$/);
  });

  it('checks the shape of a config object and of the parse options', () => {
    refused(() => parseDefense({ name: 5 } as never), /^a defense config needs a "name" string, e\.g\. \{ "name": "mad", "eps": 0\.5 \}, got 5$/);
    refused(() => parseDefense([null] as never), /^a defense config must be a spec string or an object with a "name", .*, got null$/);
    refused(
      () => parseDefense({ name: 'mad', params: [0.5] } as never),
      /^mad: "params" must be an object of parameters, e\.g\. \{ "eps": 0\.5 \}, got \[0\.5\]$/,
    );
    refused(() => parseDefense('none', { inputFormat: 'softmax' as never }), /^inputFormat must be "probs" or "logits", got "softmax"$/);
    refused(() => parseDefense('none', { secret: 'x' } as never), /^unknown option\(s\) secret; allowed: inputFormat, noiseSecret$/);
    refused(() => parseDefense('noise', { noiseSecret: 42 as never }), /^noiseSecret must be a string or a Buffer .*, got 42$/);
    assert.equal(parseDefense('noise', { noiseSecret: Buffer.from('key') }).needs.includes('inputKey'), true);
  });
});
