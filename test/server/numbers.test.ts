import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { shortestFloat32 } from '../../src/server/protocols/numbers.js';

/** Reference: the fewest significant digits that read back as the same float32, tried from 1 up. */
function fewestDigits(value: number): number {
  const target = Math.fround(value);
  for (let digits = 1; digits <= 9; digits++) if (Math.fround(Number(value.toPrecision(digits))) === target) return digits;
  return 9;
}

const significantDigits = (value: number): number => (value === 0 ? 1 : value.toExponential().split('e')[0].replace('-', '').replace('.', '').length);

describe('shortestFloat32', () => {
  it('reads back as the same float32 with the fewest digits, for any finite float32 (normal and subnormal)', () => {
    fc.assert(
      fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), (value) => {
        const written = shortestFloat32(value);
        assert.ok(Math.fround(written) === Math.fround(value), `${value} written as ${written}`); // -0 may be written as 0, as JSON does
        assert.equal(significantDigits(written), fewestDigits(value), `${value} written as ${written}`);
      }),
      { numRuns: 20_000 },
    );
  });

  it('writes familiar probabilities as they were meant', () => {
    assert.deepEqual([0.06, 0.055, 0.5, 1, 0, 0.1].map((v) => shortestFloat32(Math.fround(v))), [0.06, 0.055, 0.5, 1, 0, 0.1]);
  });
});
