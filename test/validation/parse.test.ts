/** The validation foundation: one message style, allowed keys read from the schema, the caller's error class. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { fromText, integerAtLeast, keysAt, keysOf, oneOf, optionStyle, parseOptions, positiveInteger, secretText } from '../../src/validation/index.js';

class LayerError extends Error {
  override name = 'LayerError';
}

const schema = z.strictObject({
  port: fromText(integerAtLeast(0)).optional(),
  mode: oneOf(['fast', 'slow']).optional(),
  store: z
    .union([z.literal(false), z.strictObject({ size: positiveInteger().optional(), kind: oneOf(['a', 'b']).optional() })], { error: 'false or { size, kind }' })
    .optional(),
  token: secretText(16, 'a secret of at least 16 characters').optional(),
  list: z.array(positiveInteger()).optional(),
});

const style = optionStyle(LayerError, 'things');
const failure = (value: unknown): string => {
  try {
    parseOptions(schema, value, style);
  } catch (error) {
    assert.ok(error instanceof LayerError, `threw ${String(error)}`);
    return error.message;
  }
  assert.fail(`accepted ${JSON.stringify(value)}`);
};

describe('parseOptions', () => {
  it('returns the parsed value, numbers written as text made numbers', () => {
    assert.deepEqual(parseOptions(schema, { port: '8080', mode: 'fast', store: false }, style), { port: 8080, mode: 'fast', store: false });
  });

  it('names the field, says what to write and shows what was given (as written)', () => {
    assert.equal(failure({ port: 'eighty' }), 'things.port must be an integer ≥ 0, got "eighty"');
    assert.equal(failure({ port: '-1' }), 'things.port must be an integer ≥ 0, got "-1"');
    assert.equal(failure({ mode: 'quick' }), 'things.mode must be one of fast, slow, got "quick"');
    assert.equal(failure({ port: Number.NaN }), 'things.port must be an integer ≥ 0, got NaN');
    assert.equal(failure({ list: [1, Number.POSITIVE_INFINITY] }).endsWith('got Infinity'), true);
    assert.equal(failure({ list: [1, 0] }), 'things.list[1] must be a positive integer, got 0');
    assert.equal(failure('x'), 'things must be an object, got "x"');
  });

  it('refuses unknown keys with the allowed ones read from the schema', () => {
    assert.equal(failure({ prot: 1 }), 'things: unknown option(s) prot; allowed: port, mode, store, token, list');
    assert.deepEqual(keysOf(schema), ['port', 'mode', 'store', 'token', 'list']);
    assert.deepEqual(keysAt(schema, ['store']), ['size', 'kind']);
  });

  it('reports the problem inside the one form of a union that fits the value', () => {
    assert.equal(failure({ store: { kind: 'c' } }), 'things.store.kind must be one of a, b, got "c"');
    assert.equal(failure({ store: 'big' }), 'things.store must be false or { size, kind }, got "big"');
  });

  it('never repeats a secret', () => {
    const message = failure({ token: 'short-one' });
    assert.equal(message, 'things.token must be a secret of at least 16 characters');
    assert.doesNotMatch(message, /short-one/);
  });

  it('uses the layer’s own names and unknown-key words', () => {
    const custom = optionStyle(LayerError, '', {
      name: (path) => `config file p.yaml: "${path.join('.')}"`,
      unknownKeys: (_name, keys, allowed) => `config file p.yaml: unknown field "${keys[0]}"; allowed: ${allowed.join(', ')}`,
    });
    assert.throws(() => parseOptions(schema, { port: 1.5 }, custom), /^LayerError: config file p\.yaml: "port" must be an integer ≥ 0, got 1\.5$/);
    assert.throws(() => parseOptions(schema, { mod: 'fast' }, custom), /unknown field "mod"; allowed: port, mode,/);
  });
});
