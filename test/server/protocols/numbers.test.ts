import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RequestFormatError } from '../../../src/server/errors.js';
import { kserveV2Codec, type InputRows } from '../../../src/server/protocols/index.js';
import { inputsToRows, shortestFloat32 } from '../../../src/server/protocols/numbers.js';

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
    assert.deepEqual(
      [0.06, 0.055, 0.5, 1, 0, 0.1].map((v) => shortestFloat32(Math.fround(v))),
      [0.06, 0.055, 0.5, 1, 0, 0.1],
    );
  });
});

describe('reading numeric tensors: the flat fast path equals the general one', () => {
  const rowsArb = fc
    .integer({ min: 1, max: 6 })
    .chain((cols) => fc.array(fc.array(fc.double({ noNaN: true, min: -1e6, max: 1e6 }), { minLength: cols, maxLength: cols }), { minLength: 1, maxLength: 5 }));

  it('inputsToRows: flat rows as float32, the same as the rows nested one level deeper', () => {
    fc.assert(
      fc.property(rowsArb, (rows) => {
        const flat = inputsToRows(rows);
        const nested = inputsToRows(rows.map((row) => row.map((v) => [v])));
        assert.ok(typeof flat !== 'string' && typeof nested !== 'string');
        assert.deepEqual(flat.data, Float32Array.from(rows.flat()));
        assert.deepEqual(nested.data, flat.data);
        assert.deepEqual(flat.shape, [rows[0].length]);
      }),
    );
  });

  it('inputsToRows and the KServe V2 codec refuse a non-number anywhere, and ragged rows', () => {
    fc.assert(
      fc.property(rowsArb, fc.nat(), fc.constantFrom<unknown>(null, '1', true, {}), (rows, at, bad) => {
        const values = rows.flat() as unknown[];
        const i = at % values.length;
        values[i] = bad;
        const cols = rows[0].length;
        const broken = rows.map((_, r) => values.slice(r * cols, (r + 1) * cols));
        assert.equal(typeof inputsToRows(broken), 'string');
        assert.throws(
          () => kserveV2Codec().readInputs({ inputs: [{ name: 'x', shape: [rows.length, cols], datatype: 'FP32', data: values }] }),
          RequestFormatError,
        );
      }),
    );
    assert.match(inputsToRows([[1, 2], [3]]) as string, /input row 1 has 1 values, expected 2/);
  });

  it('the KServe V2 codec reads flat and nested data alike', () => {
    fc.assert(
      fc.property(rowsArb, (rows) => {
        const shape = [rows.length, rows[0].length];
        const flat = kserveV2Codec().readInputs({ inputs: [{ name: 'x', shape, datatype: 'FP32', data: rows.flat() }] }) as InputRows;
        const nested = kserveV2Codec().readInputs({ inputs: [{ name: 'x', shape, datatype: 'FP32', data: rows }] }) as InputRows;
        assert.deepEqual(flat.data, Float32Array.from(rows.flat()));
        assert.deepEqual(nested.data, flat.data);
      }),
    );
  });
});
