import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { convertLayout, exampleShape, LUMA, pixelsToTensor, type PixelPreprocessing } from '../../src/models/preprocess.js';

const spec = (over: Partial<PixelPreprocessing>): PixelPreprocessing => ({
  width: 2,
  height: 1,
  channels: 'rgb',
  layout: 'nhwc',
  scale: 1,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  ...over,
});
/** Two pixels, RGB: (10, 20, 30) then (40, 50, 60). */
const PIXELS = Uint8Array.from([10, 20, 30, 40, 50, 60]);

function run(s: PixelPreprocessing, pixels = PIXELS): number[] {
  const c = s.channels === 'grayscale' ? 1 : 3;
  const out = new Float32Array(s.width * s.height * c);
  pixelsToTensor(pixels, s, out);
  return Array.from(out);
}

describe('pixelsToTensor', () => {
  it('writes RGB in NHWC as the pixels come, scaled', () => {
    assert.deepEqual(run(spec({ scale: 0.5 })), [5, 10, 15, 20, 25, 30]);
  });

  it('reverses the channels for BGR and plans them for NCHW', () => {
    assert.deepEqual(run(spec({ channels: 'bgr' })), [30, 20, 10, 60, 50, 40]);
    assert.deepEqual(run(spec({ layout: 'nchw' })), [10, 40, 20, 50, 30, 60]);
    assert.deepEqual(run(spec({ channels: 'bgr', layout: 'nchw' })), [30, 60, 20, 50, 10, 40]);
  });

  it('applies (pixel × scale − mean) / std per channel of the declared order', () => {
    const got = run(spec({ scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }));
    const want = [10, 20, 30, 40, 50, 60].map((p, i) => (p / 255 - [0.485, 0.456, 0.406][i % 3]) / [0.229, 0.224, 0.225][i % 3]);
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-5, `value ${i}: ${v} vs ${want[i]}`));
    // BGR: the first mean belongs to blue, the first channel written.
    const bgr = run(spec({ channels: 'bgr', mean: [100, 0, 0] }));
    assert.deepEqual(bgr.slice(0, 3), [30 - 100, 20, 10]);
  });

  it('computes grayscale as BT.601 luma', () => {
    const got = run(spec({ channels: 'grayscale', mean: [1], std: [2] }));
    const luma = (r: number, g: number, b: number) => (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b - 1) / 2;
    assert.ok(Math.abs(got[0] - luma(10, 20, 30)) < 1e-4 && Math.abs(got[1] - luma(40, 50, 60)) < 1e-4, String(got));
    assert.equal(got.length, 2);
  });

  it('writes at an offset and refuses pixels or room of the wrong size', () => {
    const out = new Float32Array(9).fill(-1);
    pixelsToTensor(PIXELS, spec({}), out, 3);
    assert.deepEqual(Array.from(out), [-1, -1, -1, 10, 20, 30, 40, 50, 60]);
    assert.throws(() => pixelsToTensor(PIXELS.subarray(1), spec({}), out), /expected 1×2×3 = 6 bytes/);
    assert.throws(() => pixelsToTensor(PIXELS, spec({}), out, 4), /no room/);
  });

  it('NCHW output is the NHWC output transposed, for any image and normalisation', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom('rgb', 'bgr', 'grayscale' as const),
        fc.double({ min: 0.001, max: 2, noNaN: true }),
        (w, h, channels, scale) => {
          const pixels = Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 37 + w) % 256);
          const base = spec({ width: w, height: h, channels, scale, mean: [0.1, 0.2, 0.3], std: [0.5, 1, 2] });
          const c = channels === 'grayscale' ? 1 : 3;
          const nhwc = new Float32Array(w * h * c);
          const nchw = new Float32Array(w * h * c);
          pixelsToTensor(pixels, base, nhwc);
          pixelsToTensor(pixels, { ...base, layout: 'nchw' }, nchw);
          assert.deepEqual(convertLayout(nhwc, 1, h, w, c, 'nhwc', 'nchw'), nchw);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('convertLayout', () => {
  it('moves a hand-written 2×2×3 example between layouts', () => {
    // NHWC: pixel p channel k = 10p + k.
    const nhwc = Float32Array.from([0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32]);
    const nchw = convertLayout(nhwc, 1, 2, 2, 3, 'nhwc', 'nchw');
    assert.deepEqual(Array.from(nchw), [0, 10, 20, 30, 1, 11, 21, 31, 2, 12, 22, 32]);
    assert.equal(convertLayout(nhwc, 1, 2, 2, 3, 'nhwc', 'nhwc'), nhwc, 'same layout: no copy');
  });

  it('round-trips NHWC → NCHW → NHWC for any batch', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 4 }),
        (rows, h, w, c) => {
          const data = Float32Array.from({ length: rows * h * w * c }, (_, i) => i * 0.5 - 3);
          const there = convertLayout(data, rows, h, w, c, 'nhwc', 'nchw');
          assert.deepEqual(convertLayout(there, rows, h, w, c, 'nchw', 'nhwc'), data);
        },
      ),
      { numRuns: 80 },
    );
  });

  it('gives the shape of one example', () => {
    assert.deepEqual(exampleShape({ width: 4, height: 3, channels: 'rgb', layout: 'nhwc' }), [3, 4, 3]);
    assert.deepEqual(exampleShape({ width: 4, height: 3, channels: 'grayscale', layout: 'nchw' }), [1, 3, 4]);
  });
});
