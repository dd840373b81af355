/**
 * The inversion attacker: where a defense has a closed form with public parameters (Kerckhoffs),
 * the attacker undoes it before training. Per defense:
 *
 * - reverse sigmoid (β, γ): each entry goes through g(y) = y − β(σ(γ·logit y) − ½), then the row is
 *   clipped to [0, 1] and renormalised: ỹ_i = g(y_i)/S with S = Σ_j g(y_j) unknown. g has three
 *   monotone pieces for γ < 1: decreasing on [0, y*], increasing on [y*, 1 − y*], decreasing on
 *   [1 − y*, 1], where g'(y) = 1 − βγ·s(1−s)/(y(1−y)) with s = σ(γ·logit y) vanishes (y* ≈ 0.022 for
 *   β = 0.5, γ = 0.2; g(1 − y) = 1 − g(y)). So an answer value has up to three preimages: Lee et al.'s
 *   design, not an accident. What is recovered: for a given S every entry is recovered exactly within
 *   its piece, and S follows from Σ y = 1. The attacker resolves the ambiguity with the prior that
 *   answers are confident: one entry (any of them: for β ≥ ~1.5 the top class gets the smallest
 *   answer) takes its largest preimage, every other its smallest, and among the S that make the row
 *   sum to 1 it keeps the most confident reading. Rows with no such reading are inverted on the
 *   middle (increasing) piece alone, where g is monotone, and renormalised. Exact for confident rows
 *   (the victim's usual answer); an entry in (y*, ~0.2) of an unsure row is read on the wrong piece.
 * - rounding, top-k, argmax: not invertible (they drop information); the attacker uses the answers as
 *   they are, which is the plain Knockoff attacker, so the grid does not run inversion against them.
 * - noise, MAD, MAD-argmax, GRAD², ModelGuard-W/S, misinformation: no closed form (a secret key, a
 *   surrogate's weights or a model the attacker does not have); the restorer learns an approximate
 *   inverse instead (restorer.ts).
 */
import { parseDefense, type ProbBatch } from '../../defenses/index.js';

export interface AnswerInverter {
  /** What the inverse recovers, for the report. */
  readonly description: string;
  invert(batch: ProbBatch): ProbBatch;
}

/** The one-stage defense spec's name and numeric parameters ("reverse-sigmoid:beta=0.5,gamma=0.2"). */
function stageOf(spec: string): { name: string; params: Record<string, number> } | undefined {
  const base = spec.split(' @ ')[0].trim();
  if (base.includes('|')) return undefined;
  const colon = base.indexOf(':');
  const name = colon < 0 ? base : base.slice(0, colon);
  const params: Record<string, number> = {};
  if (colon >= 0) {
    for (const part of base.slice(colon + 1).split(',')) {
      const [key, value] = part.split('=');
      if (key && value !== undefined && Number.isFinite(Number(value))) params[key.trim()] = Number(value);
    }
  }
  return { name: name.trim(), params };
}

/** The inverse of a defense given by its spec, or undefined where no closed form exists. */
export function inverterFor(spec: string): AnswerInverter | undefined {
  let canonical: string;
  try {
    canonical = parseDefense(spec.split(' @ ')[0]).spec;
  } catch {
    return undefined;
  }
  const stage = stageOf(canonical);
  if (stage?.name === 'reverse-sigmoid') {
    const { beta, gamma } = stage.params;
    const inverse = new ReverseSigmoidInverse(beta, gamma);
    return {
      description: `reverse sigmoid β = ${beta}, γ = ${gamma} inverted per entry and renormalised (confident reading where g is not monotone)`,
      invert: (batch) => inverse.invert(batch),
    };
  }
  return undefined;
}

/** Per defense, what the inversion attacker does (for the report and docs). */
export function inversionNote(spec: string): string {
  const inverter = inverterFor(spec);
  if (inverter) return inverter.description;
  const name = stageOf(spec)?.name ?? spec;
  if (['rounding', 'topk', 'argmax', 'none'].includes(name)) return `${name}: nothing to invert; the answers are used as they are (the Knockoff attacker)`;
  return `${name}: no closed form (secret key, surrogate or model): see the restorer`;
}

const CLIP = 1e-9;
/** Grid in t = logit(y) on which g is tabulated (y from 1e-9 to 1 − 1e-9). */
const GRID = 16385;
const T_MAX = Math.log((1 - CLIP) / CLIP);
/** S values tried per candidate when looking for the roots of Σ y(S) = 1. */
const SCAN = 48;

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

/** g(y) = y − β(σ(γ·logit y) − ½), as reverse-sigmoid.ts computes it before the clip. */
export function reverseSigmoidMap(y: number, beta: number, gamma: number): number {
  const clipped = Math.min(1 - CLIP, Math.max(CLIP, y));
  return y - beta * (sigmoid(gamma * Math.log(clipped / (1 - clipped))) - 0.5);
}

interface Piece {
  /** Grid index range [from, to], g monotone on it. */
  from: number;
  to: number;
  increasing: boolean;
  low: number;
  high: number;
}

/** Reverse sigmoid's map tabulated on a logit grid and split into monotone pieces. */
export class ReverseSigmoidInverse {
  private readonly y: Float64Array;
  private readonly g: Float64Array;
  readonly pieces: Piece[];
  /** Range of g (before the clip to [0, 1]). */
  readonly low: number;
  readonly high: number;

  constructor(
    readonly beta: number,
    readonly gamma: number,
  ) {
    this.y = new Float64Array(GRID);
    this.g = new Float64Array(GRID);
    for (let i = 0; i < GRID; i++) {
      const t = -T_MAX + (2 * T_MAX * i) / (GRID - 1);
      this.y[i] = sigmoid(t);
      this.g[i] = reverseSigmoidMap(this.y[i], beta, gamma);
    }
    this.pieces = [];
    let from = 0;
    for (let i = 1; i < GRID; i++) {
      const increasing = this.g[from + 1] >= this.g[from];
      const last = i === GRID - 1;
      const turns = !last && this.g[i + 1] >= this.g[i] !== increasing;
      if (turns || last) {
        const a = this.g[from];
        const b = this.g[i];
        this.pieces.push({ from, to: i, increasing, low: Math.min(a, b), high: Math.max(a, b) });
        from = i;
      }
    }
    this.low = Math.min(...this.pieces.map((p) => p.low));
    this.high = Math.max(...this.pieces.map((p) => p.high));
  }

  /** The preimage of v on one piece (v clamped into the piece's range), by binary search and linear interpolation in logit space. */
  preimage(piece: Piece, v: number): number {
    const { g, y } = this;
    const value = Math.min(piece.high, Math.max(piece.low, v));
    let lo = piece.from;
    let hi = piece.to;
    // g is monotone on [lo, hi]: find the cell holding value.
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (g[mid] >= value === piece.increasing) hi = mid;
      else lo = mid;
    }
    const span = g[hi] - g[lo];
    const w = span === 0 ? 0 : (value - g[lo]) / span;
    const tLo = Math.log(y[lo] / (1 - y[lo]));
    const tHi = Math.log(y[hi] / (1 - y[hi]));
    return sigmoid(tLo + Math.min(1, Math.max(0, w)) * (tHi - tLo));
  }

  /** Smallest and largest preimage of v over the pieces whose range holds it (clamped to the nearest piece when none does). */
  private extremes(v: number): [number, number] {
    let min = Infinity;
    let max = -Infinity;
    for (const piece of this.pieces) {
      if (v < piece.low - 1e-12 || v > piece.high + 1e-12) continue;
      const y = this.preimage(piece, v);
      if (y < min) min = y;
      if (y > max) max = y;
    }
    if (min === Infinity) {
      // Outside g's range (float rounding at an extreme): the nearest end of the nearest piece.
      let best = this.pieces[0];
      let gap = Infinity;
      for (const piece of this.pieces) {
        const d = v < piece.low ? piece.low - v : v - piece.high;
        if (d < gap) {
          gap = d;
          best = piece;
        }
      }
      min = max = this.preimage(best, v);
    }
    return [min, max];
  }

  /** The middle piece (where g increases): the monotone reading. */
  private middle(): Piece {
    return this.pieces.reduce(
      (best, p) => (p.increasing && p.to - p.from > best.to - best.from ? p : best),
      this.pieces.find((p) => p.increasing) ?? this.pieces[0],
    );
  }

  /** Inverts one normalised answer row into `out` (a distribution). */
  invertRow(answer: ArrayLike<number>, offset: number, k: number, out: Float64Array): void {
    let lo = 0;
    let hi = Infinity;
    let sum = 0;
    for (let i = 0; i < k; i++) sum += Math.max(0, answer[offset + i]);
    const a = new Float64Array(k);
    for (let i = 0; i < k; i++) a[i] = sum > 0 ? Math.max(0, answer[offset + i]) / sum : 1 / k;
    // S·a_i must lie in g's range for every i (entries clipped to 0 allow any S from below).
    const floor = Math.max(0, this.low);
    for (let i = 0; i < k; i++) {
      if (a[i] > 0) {
        hi = Math.min(hi, this.high / a[i]);
        lo = Math.max(lo, floor / a[i]);
      }
    }
    let best: Float64Array | undefined;
    let bestTop = -Infinity;
    const trial = new Float64Array(k);
    if (lo <= hi && Number.isFinite(hi)) {
      // The entry read as the confident one: among the two largest and the two smallest answers (β ≳ 1.5
      // gives the top class the smallest answer).
      const candidates = k <= 4 ? Array.from({ length: k }, (_, i) => i) : topAndBottom(a, 2);
      const fill = (t: number, s: number): number => {
        let total = 0;
        for (let i = 0; i < k; i++) {
          const [min, max] = this.extremes(s * a[i]);
          trial[i] = i === t ? max : min;
          total += trial[i];
        }
        return total - 1;
      };
      for (const t of candidates) {
        let prevS = lo;
        let prevF = fill(t, lo);
        for (let step = 1; step <= SCAN; step++) {
          const s = lo + ((hi - lo) * step) / SCAN;
          const f = fill(t, s);
          if (prevF === 0 || Math.sign(f) !== Math.sign(prevF)) {
            // A root in [prevS, s]: bisect.
            let left = prevS;
            let right = s;
            let fLeft = prevF;
            for (let it = 0; it < 40 && fLeft !== 0; it++) {
              const mid = (left + right) / 2;
              const fMid = fill(t, mid);
              if (Math.sign(fMid) === Math.sign(fLeft)) {
                left = mid;
                fLeft = fMid;
              } else right = mid;
            }
            const residual = fill(t, fLeft === 0 ? left : (left + right) / 2);
            if (Math.abs(residual) < 1e-3 && trial[t] > bestTop) {
              bestTop = trial[t];
              best = trial.slice();
            }
          }
          prevS = s;
          prevF = f;
        }
      }
    }
    if (!best) {
      // The monotone reading: every entry on the increasing piece, S by bisection (Σ y increases with S).
      const piece = this.middle();
      const total = (s: number) => {
        let t = 0;
        for (let i = 0; i < k; i++) t += this.preimage(piece, s * a[i]);
        return t;
      };
      let left = 0;
      let right = Number.isFinite(hi) ? Math.max(hi, 1) : 1;
      while (total(right) < 1 && right < 1e6) right *= 2;
      for (let it = 0; it < 60; it++) {
        const mid = (left + right) / 2;
        if (total(mid) < 1) left = mid;
        else right = mid;
      }
      best = Float64Array.from({ length: k }, (_, i) => this.preimage(piece, right * a[i]));
    }
    let norm = 0;
    for (let i = 0; i < k; i++) norm += best[i];
    for (let i = 0; i < k; i++) out[i] = norm > 0 ? best[i] / norm : 1 / k;
  }

  invert(batch: ProbBatch): ProbBatch {
    const { rows, cols, data } = batch;
    const out = new Float32Array(rows * cols);
    const row = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      this.invertRow(data, r * cols, cols, row);
      for (let c = 0; c < cols; c++) out[r * cols + c] = row[c];
    }
    return { rows, cols, data: out };
  }
}

function topAndBottom(a: Float64Array, n: number): number[] {
  const order = Array.from({ length: a.length }, (_, i) => i).sort((x, y) => a[y] - a[x]);
  return [...new Set([...order.slice(0, n), ...order.slice(-n)])];
}
