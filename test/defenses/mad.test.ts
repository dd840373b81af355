import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDefense, rowDistance, type ProbBatch } from '../../src/defenses/index.js';
import { TOP1_WEIGHT } from '../../src/defenses/mad/mad-geometry.js';
import { argmax, randomBatch, rowOf, seededRandom } from '../helpers/random-batches.js';

/** H(a) = ‖Gᵀa/‖Gᵀa‖ − Gᵀy/‖Gᵀy‖‖², computed from an explicit gradient matrix G (K × D). */
function deviation(g: number[][], a: number[], y: number[]): number {
  const d = g[0].length;
  const project = (w: number[]): number[] => {
    const v = new Array(d).fill(0);
    w.forEach((wk, k) => g[k].forEach((gkd, j) => (v[j] += wk * gkd)));
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  };
  const u = project(a);
  const v = project(y);
  return u.reduce((s, x, j) => s + (x - v[j]) ** 2, 0);
}

/** Last-layer gradients of the negative log-likelihood: row k = vec((p − e_k) hᵀ). */
function lastLayerGradients(p: number[], h: number[]): number[][] {
  return p.map((_, k) => p.flatMap((pi, i) => h.map((hj) => (pi - (i === k ? 1 : 0)) * hj)));
}

function candidates(k: number, t: number, oracle: 'extreme' | 'argmax'): number[][] {
  if (oracle === 'extreme') return Array.from({ length: k }, (_, i) => Array.from({ length: k }, (_, j) => (i === j ? 1 : 0)));
  const others = Array.from({ length: k }, (_, i) => i).filter((i) => i !== t);
  const out: number[][] = [];
  for (let mask = 0; mask < 1 << others.length; mask++) {
    const w = new Array(k).fill(0);
    w[t] = 1 + TOP1_WEIGHT;
    others.forEach((c, b) => {
      if (mask & (1 << b)) w[c] = 1;
    });
    const sum = w.reduce((s, x) => s + x, 0);
    out.push(w.map((x) => x / sum));
  }
  return out;
}

/** The published algorithm, by brute force: best candidate by H, then the L1 line search. */
function referenceMad(g: number[][], y: number[], _eps: number, oracle: 'extreme' | 'argmax'): { target: number[]; best: number } {
  const t = argmax(y);
  let best = -Infinity;
  let target: number[] = [];
  for (const c of candidates(y.length, t, oracle)) {
    const h = deviation(g, c, y);
    if (h > best) {
      best = h;
      target = c;
    }
  }
  return { target, best };
}

function batchOf(rows: number[][]): ProbBatch {
  return { rows: rows.length, cols: rows[0].length, data: Float32Array.from(rows.flat()) };
}

describe('MAD against a brute-force reference', () => {
  for (const oracle of ['extreme', 'argmax'] as const) {
    it(`${oracle}: last-layer closed form reaches the brute-force optimum of H`, () => {
      for (let seed = 1; seed <= 25; seed++) {
        const k = 2 + (seed % 9);
        const y = rowOf(randomBatch(seed, 1, k, 3), 0);
        const p = rowOf(randomBatch(seed + 1000, 1, k, 2), 0);
        const random = seededRandom(seed);
        const h = Array.from({ length: 4 }, () => random() + 0.1);
        const g = lastLayerGradients(p, h);
        const ref = referenceMad(g, y, 2, oracle);
        // eps = 2 (the largest L1 distance): the answer is the target itself.
        const out = rowOf(parseDefense(`mad:eps=2,oracle=${oracle}`).apply(batchOf([y]), { surrogateProbs: batchOf([p]) }), 0);
        const reached = deviation(g, out, y);
        assert.ok(reached >= ref.best - 1e-5, `seed ${seed} k ${k}: H ${reached} < brute-force ${ref.best}`);
      }
    });

    it(`${oracle}: Gram matrices of an arbitrary Jacobian reach the brute-force optimum`, () => {
      for (let seed = 1; seed <= 20; seed++) {
        const k = 3 + (seed % 8);
        const random = seededRandom(seed * 7);
        const g = Array.from({ length: k }, () => Array.from({ length: 12 }, () => 2 * random() - 1));
        const gram = new Float64Array(k * k);
        for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) gram[i * k + j] = g[i].reduce((s, x, d) => s + x * g[j][d], 0);
        const y = rowOf(randomBatch(seed, 1, k, 3), 0);
        const ref = referenceMad(g, y, 2, oracle);
        const out = rowOf(parseDefense(`mad:eps=2,oracle=${oracle},jacobian=full`).apply(batchOf([y]), { gram }), 0);
        assert.ok(deviation(g, out, y) >= ref.best - 1e-5, `seed ${seed}`);
      }
    });
  }

  it('the closed form and the Gram path agree when the Gram matrix is the last layer’s', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const k = 10;
      const y = rowOf(randomBatch(seed, 1, k, 4), 0);
      const p = rowOf(randomBatch(seed + 50, 1, k, 1), 0);
      const g = lastLayerGradients(p, [0.3, 1.2, 0.7]);
      const gram = new Float64Array(k * k);
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) gram[i * k + j] = g[i].reduce((s, x, d) => s + x * g[j][d], 0);
      for (const oracle of ['extreme', 'argmax']) {
        const a = rowOf(parseDefense(`mad:eps=0.7,oracle=${oracle}`).apply(batchOf([y]), { surrogateProbs: batchOf([p]) }), 0);
        const b = rowOf(parseDefense(`mad:eps=0.7,oracle=${oracle},jacobian=full`).apply(batchOf([y]), { gram }), 0);
        a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-5, `seed ${seed} ${oracle} class ${i}`));
      }
    }
  });

  it('the line search spends exactly the L1 and L2 budgets when the target is farther', () => {
    const y = [0.7, 0.2, 0.1];
    const p = [0.2, 0.3, 0.5];
    for (const norm of ['l1', 'l2'] as const) {
      const out = rowOf(parseDefense(`mad:eps=0.3,norm=${norm}`).apply(batchOf([y]), { surrogateProbs: batchOf([p]) }), 0);
      assert.ok(Math.abs(rowDistance(norm, y, 0, out, 0, 3) - 0.3) < 1e-6, norm);
    }
  });

  it('the KL line search stays inside the budget and close to it', () => {
    const y = rowOf(randomBatch(3, 1, 10, 4), 0);
    const p = rowOf(randomBatch(4, 1, 10, 1), 0);
    const out = rowOf(parseDefense('mad:eps=0.2,norm=kl').apply(batchOf([y]), { surrogateProbs: batchOf([p]) }), 0);
    const kl = rowDistance('kl', y, 0, out, 0, 10);
    assert.ok(kl <= 0.2 + 1e-5 && kl > 0.19, `KL ${kl}`);
  });

  it('a hand-computed case: y = (0.7, 0.2, 0.1), p = (0.3, 0.3, 0.4)', () => {
    // cos∠(p − e_k, p − y) is 0.98, −0.16 and −0.72 for k = 0, 1, 2: the extreme target is e_2;
    // among subsets holding class 0, {0, 2} gives the smallest cosine (0.42).
    const y = batchOf([[0.7, 0.2, 0.1]]);
    const p = batchOf([[0.3, 0.3, 0.4]]);
    const extreme = rowOf(parseDefense('mad:eps=2').apply(y, { surrogateProbs: p }), 0);
    [0, 0, 1].forEach((v, i) => assert.ok(Math.abs(extreme[i] - v) < 1e-6));
    const half = rowOf(parseDefense('mad:eps=0.9').apply(y, { surrogateProbs: p }), 0);
    // α = 0.9 / ‖y − e_2‖₁ = 0.9 / 1.8 = 0.5
    [0.35, 0.1, 0.55].forEach((v, i) => assert.ok(Math.abs(half[i] - v) < 1e-6));
    const keep = rowOf(parseDefense('mad-argmax:eps=2').apply(y, { surrogateProbs: p }), 0);
    [0.5, 0, 0.5].forEach((v, i) => assert.ok(Math.abs(keep[i] - v) < 1e-5));
    assert.equal(argmax(keep), 0);
  });

  it('falls back to the farthest candidate when the surrogate agrees with the answer (p = y)', () => {
    const y = batchOf([[0.6, 0.3, 0.1]]);
    const out = rowOf(parseDefense('mad:eps=2').apply(y, { surrogateProbs: y }), 0);
    assert.deepEqual(out, [0, 0, 1]);
    const kept = rowOf(parseDefense('mad-argmax:eps=0.5').apply(y, { surrogateProbs: y }), 0);
    assert.equal(argmax(kept), 0);
    assert.ok(out.every(Number.isFinite) && kept.every(Number.isFinite));
  });

  it('MAD-argmax keeps the top-1 label with the greedy search, K = 13 … 45 and K = 1000', () => {
    for (const k of [13, 20, 31, 45, 1000]) {
      const rows = k === 1000 ? 3 : 10;
      const y = randomBatch(k, rows, k, 6);
      const p = randomBatch(k + 1, rows, k, 2);
      const out = parseDefense('mad-argmax:eps=2').apply(y, { surrogateProbs: p });
      for (let r = 0; r < rows; r++) assert.equal(argmax(rowOf(out, r)), argmax(rowOf(y, r)), `K ${k} row ${r}`);
    }
  });
});
