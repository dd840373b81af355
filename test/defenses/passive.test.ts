import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { batchFromRows, batchToRows, parseDefense } from '../../src/defenses/index.js';

const close = (actual: number[][], expected: number[][], tol = 1e-6): void => {
  assert.equal(actual.length, expected.length);
  actual.forEach((row, r) => row.forEach((v, c) => assert.ok(Math.abs(v - expected[r][c]) <= tol, `row ${r} col ${c}: ${v} vs ${expected[r][c]}`)));
};
const run = (spec: string, rows: number[][], ctx = {}): number[][] => batchToRows(parseDefense(spec).apply(batchFromRows(rows), ctx));

describe('passive defenses, hand-computed', () => {
  it('none returns the input', () => {
    close(run('none', [[0.25, 0.75]]), [[0.25, 0.75]]);
  });

  it('topk zeroes all but the k largest, and renormalises on request', () => {
    close(run('topk:k=2', [[0.1, 0.5, 0.15, 0.25]]), [[0, 0.5, 0, 0.25]]);
    close(run('topk:k=2,renormalize=true', [[0.1, 0.5, 0.15, 0.25]]), [[0, 2 / 3, 0, 1 / 3]]);
    close(run('topk:k=10', [[0.4, 0.6]]), [[0.4, 0.6]]);
  });

  it('rounding rounds to the given decimals and keeps the row summing to 1', () => {
    close(run('rounding:decimals=1', [[0.34, 0.33, 0.33]]), [[0.4, 0.3, 0.3]]);
    close(run('rounding:decimals=2', [[0.123, 0.456, 0.421]]), [[0.12, 0.46, 0.42]]);
    close(run('rounding', [[0.1234, 0.8766]]), [[0.123, 0.877]]);
  });

  it('argmax answers the one-hot label, first index on ties', () => {
    close(
      run('argmax', [
        [0.2, 0.5, 0.3],
        [0.4, 0.4, 0.2],
      ]),
      [
        [0, 1, 0],
        [1, 0, 0],
      ],
    );
  });

  it('reverse sigmoid follows the formula of Lee et al.', () => {
    const beta = 0.5;
    const gamma = 0.3;
    const y = [0.7, 0.2, 0.1];
    const sigma = (x: number): number => 1 / (1 + Math.exp(-x));
    const raw = y.map((v) => Math.min(1, Math.max(0, v - beta * (sigma(gamma * Math.log(v / (1 - v))) - 0.5))));
    const sum = raw.reduce((a, b) => a + b, 0);
    close(run(`reverse-sigmoid:beta=${beta},gamma=${gamma}`, [y]), [raw.map((v) => v / sum)]);
  });

  it('reverse sigmoid stays finite and on the simplex for a very large beta', () => {
    // r = 50·(σ(log 9) − ½) = 20 clips the top entry to 0; the small ones are raised and clip to 1.
    const out = run('reverse-sigmoid:beta=50,gamma=1', [
      [0.9, 0.05, 0.05],
      [1, 0, 0],
    ]);
    assert.ok(out.flat().every(Number.isFinite));
    close(out, [
      [0, 0.5, 0.5],
      [0, 0.5, 0.5],
    ]);
  });

  it('adaptive misinformation blends by the sigmoid of the confidence gap', () => {
    const mis = batchFromRows([
      [0.05, 0.9, 0.05],
      [0.05, 0.9, 0.05],
    ]);
    const out = run(
      'misinformation:tau=0.5,nu=10',
      [
        [0.6, 0.3, 0.1],
        [0.4, 0.35, 0.25],
      ],
      { misinformationProbs: mis },
    );
    const a0 = 1 / (1 + Math.exp(-10 * (0.5 - 0.6)));
    const a1 = 1 / (1 + Math.exp(-10 * (0.5 - 0.4)));
    close(out, [
      [0.6, 0.3, 0.1].map((v, i) => (1 - a0) * v + a0 * [0.05, 0.9, 0.05][i]),
      [0.4, 0.35, 0.25].map((v, i) => (1 - a1) * v + a1 * [0.05, 0.9, 0.05][i]),
    ]);
  });

  it('noise is deterministic per key, differs across keys and secrets, and keeps zeros at zero', () => {
    const rows = [[0.6, 0.3, 0.1, 0]];
    const a = parseDefense('noise:scale=1', { noiseSecret: 's1' });
    const b = parseDefense('noise:scale=1', { noiseSecret: 's2' });
    const batch = batchFromRows(rows);
    const first = batchToRows(a.apply(batch, { inputKeys: ['x'] }));
    assert.deepEqual(batchToRows(a.apply(batch, { inputKeys: ['x'] })), first);
    assert.notDeepEqual(batchToRows(a.apply(batch, { inputKeys: ['y'] })), first);
    assert.notDeepEqual(batchToRows(b.apply(batch, { inputKeys: ['x'] })), first);
    assert.equal(first[0][3], 0);
    assert.ok(Math.abs(first[0].reduce((s, v) => s + v, 0) - 1) < 1e-6);
  });

  it('laplace noise differs from gaussian noise for the same key', () => {
    const batch = batchFromRows([[0.5, 0.3, 0.2]]);
    const g = batchToRows(parseDefense('noise:scale=1,dist=gaussian', { noiseSecret: 'k' }).apply(batch, { inputKeys: ['a'] }));
    const l = batchToRows(parseDefense('noise:scale=1,dist=laplace', { noiseSecret: 'k' }).apply(batch, { inputKeys: ['a'] }));
    assert.notDeepEqual(g, l);
  });

  it('a pipeline applies its stages in order', () => {
    close(run('topk:k=2,renormalize=true|rounding:decimals=1', [[0.1, 0.55, 0.35]]), [[0, 0.6, 0.4]]);
  });

  it('logit input is turned into probabilities first', () => {
    const defense = parseDefense('none', { inputFormat: 'logits' });
    const out = batchToRows(defense.apply(batchFromRows([[0, Math.log(3)]])));
    close(out, [[0.25, 0.75]]);
  });

  it('never mutates the caller’s batch', () => {
    const batch = batchFromRows([[0.1, 0.5, 0.15, 0.25]]);
    const before = Array.from(batch.data);
    parseDefense('topk:k=1,renormalize=true|rounding:decimals=1').apply(batch);
    assert.deepEqual(Array.from(batch.data), before);
  });
});
