import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DefenseSpecError, InvalidBatchError, MissingContextError, parseDefense, rowDistance, type ProbBatch } from '../../src/defenses/index.js';
import { Redirection } from '../../src/defenses/grad2.js';
import { argmax, randomBatch, rowOf, seededRandom } from '../helpers/random-batches.js';
import { vertexOptimum } from './helpers/lp-vertices.js';

type Norm = 'l1' | 'l2';
type Target = 'reverse' | 'least' | 'next';

const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
const cosine = (a: number[], b: number[]): number => dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));
const distance = (norm: Norm, x: ArrayLike<number>, y: ArrayLike<number>): number => rowDistance(norm, x, 0, y, 0, x.length);

/** Gᵀx for an explicit K × D gradient matrix. */
function project(g: number[][], x: ArrayLike<number>): number[] {
  const v = new Array(g[0].length).fill(0);
  for (let k = 0; k < g.length; k++) for (let j = 0; j < v.length; j++) v[j] += x[k] * g[k][j];
  return v;
}

/** Last-layer gradients of the negative log-likelihood: row k = vec((p − e_k) hᵀ). */
function lastLayerGradients(p: number[], h: number[]): number[][] {
  return p.map((_, k) => p.flatMap((pi, i) => h.map((hj) => (pi - (i === k ? 1 : 0)) * hj)));
}

function gramOf(g: number[][]): number[] {
  return g.flatMap((gi) => g.map((gj) => dot(gi, gj)));
}

/** The target direction's weights w (d = Gᵀw), written from the definitions. */
function targetWeights(target: Target, y: number[]): number[] {
  if (target === 'reverse') return y.map((v) => -v);
  const tau = target === 'least' ? y.indexOf(Math.min(...y)) : (argmax(y) + 1) % y.length;
  return y.map((_, i) => (i === tau ? 1 : 0));
}

/** Random answers within the budget: y moved toward random points of the simplex (the set is convex). */
function feasibleSamples(y: number[], eps: number, norm: Norm, count: number, random: () => number): number[][] {
  const out: number[][] = [];
  for (let s = 0; s < count; s++) {
    const sparse = random() < 0.5;
    const z = y.map(() => (sparse && random() < 0.6 ? 0 : -Math.log(random() + 1e-12)));
    if (!z.some((v) => v > 0)) z[Math.floor(random() * y.length)] = 1;
    const total = z.reduce((a, b) => a + b, 0);
    const point = z.map((v) => v / total);
    const d = distance(norm, point, y);
    const alpha = d > 0 ? Math.min(1, eps / d) * (random() < 0.5 ? 1 : random()) : 0;
    out.push(y.map((v, i) => v + alpha * (point[i] - v)));
  }
  return out;
}

function softmaxRow(k: number, sharpness: number, random: () => number): number[] {
  const z = Array.from({ length: k }, () => Math.exp(sharpness * (2 * random() - 1)));
  const total = z.reduce((a, b) => a + b, 0);
  return z.map((v) => v / total);
}

const batchOf = (rows: number[][]): ProbBatch => ({ rows: rows.length, cols: rows[0].length, data: Float32Array.from(rows.flat()) });

/** Weights with exact zeros and ties mixed in, as a probability row. */
const rowArbitrary = (minK: number, maxK: number) =>
  fc.integer({ min: minK, max: maxK }).chain((k) =>
    fc
      .array(fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 0.001, max: 50, noNaN: true })), { minLength: k, maxLength: k })
      .filter((w) => w.some((v) => v > 0))
      .map((w) => {
        const total = w.reduce((a, b) => a + b, 0);
        return w.map((v) => v / total);
      }),
  );
const alignmentArbitrary = (k: number) => fc.array(fc.oneof(fc.constant(0.5), fc.double({ min: -1, max: 1, noNaN: true })), { minLength: k, maxLength: k });

function assertOnSimplex(x: ArrayLike<number>, tolerance: number): void {
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    assert.ok(x[i] >= -1e-12 && Number.isFinite(x[i]), `entry ${i} is ${x[i]}`);
    sum += x[i];
  }
  assert.ok(Math.abs(sum - 1) <= tolerance, `sums to ${sum}`);
}

describe('GRAD²: maximise aᵀỹ over the simplex within the budget', () => {
  it('L1: the exact optimum of the linear program (brute-force vertices, K = 2 … 5)', () => {
    fc.assert(
      fc.property(
        rowArbitrary(2, 5).chain((y) => fc.tuple(fc.constant(y), alignmentArbitrary(y.length))),
        fc.double({ min: 1e-4, max: 2, noNaN: true }),
        ([y, a], eps) => {
          const x = new Float64Array(y.length);
          new Redirection(y.length).solveL1(y, 0, Float64Array.from(a), eps, x);
          const best = -vertexOptimum(
            a.map((v) => -v),
            y,
            eps,
          ).value;
          assert.ok(Math.abs(dot(a, x) - best) <= 1e-9, `aᵀx = ${dot(a, x)}, brute force ${best}`);
          assertOnSimplex(x, 1e-9);
          assert.ok(distance('l1', x, y) <= eps + 1e-9);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('L2: no feasible random answer does better; a slack budget means the best point of the simplex', () => {
    fc.assert(
      fc.property(
        rowArbitrary(2, 12).chain((y) => fc.tuple(fc.constant(y), alignmentArbitrary(y.length))),
        fc.double({ min: 1e-4, max: Math.SQRT2, noNaN: true }),
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        ([y, a], eps, seed) => {
          const x = new Float64Array(y.length);
          new Redirection(y.length).solveL2(y, 0, Float64Array.from(a), eps, x);
          assertOnSimplex(x, 1e-9);
          const d = distance('l2', x, y);
          assert.ok(d <= eps + 1e-9, `L2 ${d} > ${eps}`);
          const value = dot(a, x);
          // Differences of a below 1e-9 of its range count as ties (see FLAT in grad2.ts).
          const slack = 1e-9 * (Math.max(...a) - Math.min(...a)) + 1e-12;
          for (const s of feasibleSamples(y, eps, 'l2', 300, seededRandom(seed)))
            assert.ok(dot(a, s) <= value + slack, `a sample reaches ${dot(a, s)} > ${value}`);
          if (d < eps - 1e-9) assert.ok(value >= Math.max(...a) - slack, `budget left (${d} < ${eps}) but aᵀx = ${value} < max a`);
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('GRAD² steers the surrogate gradient toward its target', () => {
  const cases = (jacobian: 'last-layer' | 'full') =>
    Array.from({ length: 30 }, (_, i) => {
      const random = seededRandom(1000 + i);
      const k = 2 + (i % 9);
      const y = softmaxRow(k, 4, random);
      const p = softmaxRow(k, 2, random);
      // Last layer: rows (p − e_k) ⊗ h. Full: any K × D matrix stands for a whole network's gradients.
      const g =
        jacobian === 'last-layer'
          ? lastLayerGradients(
              p,
              Array.from({ length: 3 }, () => random() + 0.1),
            )
          : Array.from({ length: k }, () => Array.from({ length: 7 }, () => 2 * random() - 1));
      return { y, p, g, random };
    });

  for (const jacobian of ['last-layer', 'full'] as const) {
    for (const norm of ['l1', 'l2'] as const) {
      for (const target of ['reverse', 'least', 'next'] as const) {
        it(`${jacobian}, ${norm}, target=${target}: the inner product with the target is the best of all sampled answers`, () => {
          for (const { y, p, g, random } of cases(jacobian)) {
            const k = y.length;
            const eps = (norm === 'l1' ? 2 : Math.SQRT2) * (0.05 + 0.9 * random());
            const yBatch = batchOf([y]);
            const y32 = Array.from(yBatch.data);
            const ctx = jacobian === 'full' ? { gram: Float64Array.from(gramOf(g)) } : { surrogateProbs: batchOf([p]) };
            const out = rowOf(parseDefense(`grad2:eps=${eps},norm=${norm},target=${target},jacobian=${jacobian}`).apply(yBatch, ctx), 0);
            assert.ok(distance(norm, out, y32) <= eps + 1e-6);
            const d = project(g, targetWeights(target, y32));
            const scale = Math.sqrt(dot(d, d)) * Math.max(...g.map((row) => Math.sqrt(dot(row, row))));
            const reached = dot(project(g, out), d);
            assert.ok(reached >= dot(project(g, y32), d) - 1e-6 * scale, 'worse than the answer itself');
            for (const s of feasibleSamples(y32, eps, norm, 300, random)) {
              assert.ok(dot(project(g, s), d) <= reached + 1e-6 * scale, `a sample beats ${reached}`);
            }
            if (target === 'reverse') {
              // Against −Gᵀy the unperturbed answer has the lowest cosine, −1, so it can only rise. It rises
              // strictly except where the inner product is best served by shrinking the gradient: on the last
              // layer the L2 optimum moves y straight toward p (a = p − y), and with two classes every Gᵀỹ
              // lies on one line; there the cosine stays −1 until ỹ passes p.
              const before = cosine(project(g, y32), d);
              const after = cosine(project(g, out), d);
              assert.ok(after >= before - 1e-9, `cosine ${after} vs ${before}`);
              if (jacobian === 'full' || (norm === 'l1' && k > 2)) assert.ok(after > before + 1e-6, `cosine ${after} vs ${before}`);
            }
          }
        });
      }
    }
  }

  it('jacobian=full with the last layer’s own Gram matrices gives the last-layer answer', () => {
    for (const target of ['reverse', 'least', 'next'] as const) {
      for (const norm of ['l1', 'l2'] as const) {
        const y = randomBatch(3, 6, 7, 3);
        const p = randomBatch(4, 6, 7, 2);
        const gram = new Float64Array(6 * 49);
        for (let r = 0; r < 6; r++) {
          const pr = rowOf(p, r);
          const pp = dot(pr, pr);
          for (let i = 0; i < 7; i++) for (let j = 0; j < 7; j++) gram[r * 49 + i * 7 + j] = pp - pr[i] - pr[j] + (i === j ? 1 : 0);
        }
        const fast = parseDefense(`grad2:eps=0.6,norm=${norm},target=${target}`).apply(y, { surrogateProbs: p });
        const full = parseDefense(`grad2:eps=0.6,norm=${norm},target=${target},jacobian=full`).apply(y, { gram });
        fast.data.forEach((v, i) => {
          assert.ok(Math.abs(v - full.data[i]) <= 1e-6, `${target} ${norm} entry ${i}: ${v} vs ${full.data[i]}`);
        });
      }
    }
  });

  it('a surrogate that agrees with the answer (p = y) gives no reverse direction: the answer is returned', () => {
    const y = batchOf([[0.5, 0.3, 0.2]]);
    const out = parseDefense('grad2:eps=1').apply(y, { surrogateProbs: y });
    assert.deepEqual(Array.from(out.data), Array.from(y.data));
  });
});

describe('GRAD² as a defense over random batches (K = 2 … 1000)', () => {
  const batchArbitrary = fc
    .record({
      k: fc.oneof(fc.integer({ min: 2, max: 12 }), fc.integer({ min: 13, max: 60 }), fc.constantFrom(100, 1000)),
      rows: fc.integer({ min: 1, max: 4 }),
      seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      sharpness: fc.double({ min: 0, max: 12, noNaN: true }),
      zeros: fc.boolean(),
    })
    .map(({ k, rows, seed, sharpness, zeros }) => {
      const batch = randomBatch(seed, rows, k, sharpness, zeros);
      const surrogateProbs = randomBatch(seed ^ 0x5bd1e995, rows, k, 2);
      // Gram matrices of a random K × 5 Jacobian per row (positive semi-definite), for widths that fit.
      const random = seededRandom(seed ^ 0x1b873593);
      const gram =
        k <= 60
          ? Float64Array.from(
              Array.from({ length: rows }, () => gramOf(Array.from({ length: k }, () => Array.from({ length: 5 }, () => 2 * random() - 1)))).flat(),
            )
          : undefined;
      return { batch, ctx: { surrogateProbs, gram } };
    });

  for (const spec of [
    'grad2:eps=0.5',
    'grad2:eps=1.5,target=least',
    'grad2:eps=0.3,norm=l2,target=next',
    'grad2:eps=0.8,jacobian=full',
    'grad2:eps=0.4,norm=l2,jacobian=full,target=least',
  ]) {
    it(`${spec}: on the simplex, within its budget, the same answer twice`, () => {
      const defense = parseDefense(spec);
      const eps = Number(/eps=([\d.]+)/.exec(spec)?.[1]);
      const norm: Norm = spec.includes('norm=l2') ? 'l2' : 'l1';
      fc.assert(
        fc.property(batchArbitrary, ({ batch, ctx }) => {
          if (spec.includes('full') && !ctx.gram) return;
          const out = defense.apply(batch, ctx);
          for (let r = 0; r < out.rows; r++) {
            const row = rowOf(out, r);
            assertOnSimplex(row, 1e-6);
            const d = rowDistance(norm, batch.data, r * batch.cols, out.data, r * batch.cols, batch.cols);
            assert.ok(d <= eps + 1e-6, `row ${r}: ${norm} ${d} > ${eps}`);
          }
          assert.deepEqual(defense.apply(batch, ctx).data, out.data);
        }),
        { numRuns: 30 },
      );
    });
  }
});

describe('GRAD² specs and context', () => {
  const y = batchOf([[0.6, 0.4]]);
  it('names what is missing or malformed', () => {
    assert.throws(
      () => parseDefense('grad2').apply(y),
      (e: unknown) => e instanceof MissingContextError && /grad2 needs the surrogate’s probabilities/.test((e as Error).message),
    );
    assert.throws(
      () => parseDefense('grad2:jacobian=full').apply(y, { surrogateProbs: y }),
      (e: unknown) => e instanceof MissingContextError && /Gram matrices/.test((e as Error).message),
    );
    assert.throws(
      () => parseDefense('grad2:jacobian=full').apply(y, { gram: new Float64Array(3) }),
      (e: unknown) => e instanceof InvalidBatchError && /Gram matrices hold 3 values, expected 1×2×2/.test((e as Error).message),
    );
    assert.throws(() => parseDefense('grad2').apply(y, { surrogateProbs: batchOf([[0.2, 0.3, 0.5]]) }), /surrogate probabilities is 1×3, expected 1×2/);
    assert.deepEqual(parseDefense('grad2').needs, ['surrogate']);
    assert.deepEqual(parseDefense('grad2:jacobian=full').needs, ['surrogateGram']);
    assert.equal(parseDefense('grad2').keepsTop1, false);
  });

  const bad: [string, RegExp][] = [
    ['grad2:eps=2.5', /grad2: eps=2\.5 exceeds the largest possible l1 distance between two probability vectors \(2\.0000\)/],
    ['grad2:eps=1.5,norm=l2', /grad2: eps=1\.5 exceeds the largest possible l2 distance/],
    ['grad2:eps=-1', /grad2: parameter "eps" must be a number > 0, got "-1"/],
    ['grad2:norm=kl', /grad2: parameter "norm" must be one of l1 \| l2, got "kl"/],
    ['grad2:target=watermark', /grad2: parameter "target" must be one of reverse \| least \| next, got "watermark"/],
    ['grad2:oracle=argmax', /grad2: unknown parameter "oracle"; allowed: eps/],
  ];
  for (const [spec, message] of bad) {
    it(`rejects ${spec}`, () =>
      assert.throws(
        () => parseDefense(spec),
        (e: unknown) => e instanceof DefenseSpecError && message.test((e as Error).message),
      ));
  }

  it('spells out every parameter, and answers to its alias', () => {
    assert.equal(parseDefense('grad2').spec, 'grad2:eps=0.5,norm=l1,target=reverse,jacobian=last-layer');
    assert.equal(parseDefense('gradient-redirection:eps=0.2,target=least').spec, 'grad2:eps=0.2,norm=l1,target=least,jacobian=last-layer');
  });
});
