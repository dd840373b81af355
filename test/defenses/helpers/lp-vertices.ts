/**
 * Brute-force linear programming for small K: the optimum of a linear objective over
 * {x : Σx = 1, x ≥ 0, ‖x − y‖₁ ≤ ε} (optionally also x_j ≤ x_t for every j, the top-1 constraint),
 * by enumerating every vertex of the polytope. The L1 ball is written as its 2^K facets
 * Σ s_k (x_k − y_k) ≤ ε, s ∈ {±1}^K, so a vertex is where Σx = 1 and K − 1 independent
 * facets are tight. Exponential: meant for K ≤ 5 in tests.
 */

export interface VertexOptimum {
  value: number;
  x: number[];
  vertices: number;
}

interface Row {
  a: number[];
  b: number;
}

function constraints(y: readonly number[], eps: number, top1: number | undefined): Row[] {
  const k = y.length;
  const rows: Row[] = [];
  for (let i = 0; i < k; i++) {
    const a = new Array(k).fill(0);
    a[i] = -1;
    rows.push({ a, b: 0 });
  }
  if (top1 !== undefined) {
    for (let j = 0; j < k; j++) {
      if (j === top1) continue;
      const a = new Array(k).fill(0);
      a[j] = 1;
      a[top1] = -1;
      rows.push({ a, b: 0 });
    }
  }
  for (let mask = 0; mask < 1 << k; mask++) {
    const a = Array.from({ length: k }, (_, i) => (mask & (1 << i) ? 1 : -1));
    rows.push({ a, b: eps + a.reduce((s, ai, i) => s + ai * y[i], 0) });
  }
  return rows;
}

/** Solves the square system M x = rhs by Gaussian elimination with partial pivoting; undefined if singular. */
function solveSquare(m: number[][], rhs: number[]): number[] | undefined {
  const n = rhs.length;
  const a = m.map((row, i) => [...row, rhs[i]]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(a[r][col]) > Math.abs(a[pivot][col])) pivot = r;
    if (Math.abs(a[pivot][col]) < 1e-12) return undefined;
    [a[col], a[pivot]] = [a[pivot], a[col]];
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = a[r][col] / a[col][col];
      if (f === 0) continue;
      for (let c = col; c <= n; c++) a[r][c] -= f * a[col][c];
    }
  }
  return a.map((row, i) => row[n] / row[i]);
}

function* combinations(n: number, r: number): Generator<number[]> {
  const idx = Array.from({ length: r }, (_, i) => i);
  if (r > n) return;
  while (true) {
    yield idx;
    let i = r - 1;
    while (i >= 0 && idx[i] === n - r + i) i--;
    if (i < 0) return;
    idx[i]++;
    for (let j = i + 1; j < r; j++) idx[j] = idx[j - 1] + 1;
  }
}

/**
 * The least value of cᵀx over the vertices (maximise by passing −c). `top1` adds x_j ≤ x_top1.
 * Feasibility is checked within `tolerance`.
 */
export function vertexOptimum(c: readonly number[], y: readonly number[], eps: number, top1?: number, tolerance = 1e-9): VertexOptimum {
  const k = y.length;
  const rows = constraints(y, eps, top1);
  let best: VertexOptimum = { value: Infinity, x: [], vertices: 0 };
  let vertices = 0;
  for (const active of combinations(rows.length, k - 1)) {
    const m = [new Array(k).fill(1), ...active.map((i) => rows[i].a)];
    const rhs = [1, ...active.map((i) => rows[i].b)];
    const x = solveSquare(m, rhs);
    if (!x) continue;
    if (!rows.every((row) => row.a.reduce((s, ai, i) => s + ai * x[i], 0) <= row.b + tolerance)) continue;
    vertices++;
    const value = c.reduce((s, ci, i) => s + ci * x[i], 0);
    if (value < best.value) best = { value, x, vertices: 0 };
  }
  best.vertices = vertices;
  return best;
}
