/**
 * The Shapiro–Wilk W test of normality for 3 ≤ n ≤ 5000, implemented from Royston's approximation
 * (Royston 1992, "Approximating the Shapiro-Wilk W-test for non-normality"; algorithm AS R94, 1995):
 * coefficients from the normal scores mᵢ = Φ⁻¹((i − 3/8)/(n + 1/4)) with polynomial corrections of the
 * two outer ones, and the p-value from a normalising transform of W (n = 3 exact; 4–11 and ≥ 12 fitted).
 */
import { normalQuantile, normalUpperTail } from './normal.js';

export interface ShapiroWilkResult {
  readonly w: number;
  /** Upper-tail p-value of the normality hypothesis (small: not normal). */
  readonly p: number;
  readonly n: number;
}

export const SHAPIRO_WILK_MIN_N = 3;
export const SHAPIRO_WILK_MAX_N = 5000;

function poly(coefficients: readonly number[], x: number): number {
  let result = 0;
  for (let i = coefficients.length - 1; i >= 0; i--) result = result * x + coefficients[i];
  return result;
}

// AS R94 constants (Royston 1995), coefficients in increasing powers.
const C1 = [0, 0.221157, -0.147981, -2.07119, 4.434685, -2.706056];
const C2 = [0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633];
const G = [-2.273, 0.459];
const C3 = [0.544, -0.39978, 0.025054, -6.714e-4];
const C4 = [1.3822, -0.77857, 0.062767, -0.0020322];
const C5 = [-1.5861, -0.31082, -0.083751, 0.0038915];
const C6 = [-0.4803, -0.082676, 0.0030302];

/** The upper half of the antisymmetric coefficients aₙ, aₙ₋₁, … (a[i] pairs with the (n−1−i)-th order statistic). */
const coefficientCache = new Map<number, Float64Array>();

function coefficients(n: number): Float64Array {
  const cached = coefficientCache.get(n);
  if (cached) return cached;
  const half = Math.floor(n / 2);
  const a = new Float64Array(half);
  if (n === 3) {
    a[0] = Math.SQRT1_2;
  } else {
    const m = new Float64Array(half);
    let summ2 = 0;
    for (let i = 0; i < half; i++) {
      // m for the (n − i)-th order statistic (positive); the lower half is its mirror.
      m[i] = -normalQuantile((i + 1 - 0.375) / (n + 0.25));
      summ2 += 2 * m[i] * m[i];
    }
    const ssumm2 = Math.sqrt(summ2);
    const u = 1 / Math.sqrt(n);
    a[0] = poly(C1, u) + m[0] / ssumm2;
    let first: number;
    let phi: number;
    if (n > 5) {
      a[1] = poly(C2, u) + m[1] / ssumm2;
      phi = (summ2 - 2 * m[0] * m[0] - 2 * m[1] * m[1]) / (1 - 2 * a[0] * a[0] - 2 * a[1] * a[1]);
      first = 2;
    } else {
      phi = (summ2 - 2 * m[0] * m[0]) / (1 - 2 * a[0] * a[0]);
      first = 1;
    }
    const root = Math.sqrt(phi);
    for (let i = first; i < half; i++) a[i] = m[i] / root;
  }
  // Bounded cache: PRADA's pooled sizes vary, so keep it from growing without limit.
  if (coefficientCache.size >= 64) coefficientCache.delete(coefficientCache.keys().next().value as number);
  coefficientCache.set(n, a);
  return a;
}

/**
 * W and its p-value. Throws a RangeError for n outside [3, 5000], for non-finite values, and for a
 * sample whose values are all equal (W undefined).
 */
export function shapiroWilk(sample: ArrayLike<number>): ShapiroWilkResult {
  const n = sample.length;
  if (n < SHAPIRO_WILK_MIN_N || n > SHAPIRO_WILK_MAX_N) {
    throw new RangeError(`Shapiro–Wilk needs between ${SHAPIRO_WILK_MIN_N} and ${SHAPIRO_WILK_MAX_N} values, got ${n}`);
  }
  const x = Float64Array.from(sample);
  for (let i = 0; i < n; i++) if (!Number.isFinite(x[i])) throw new RangeError(`Shapiro–Wilk: value ${i} is not finite`);
  x.sort();
  const range = x[n - 1] - x[0];
  if (!(range > 0)) throw new RangeError('Shapiro–Wilk: all values are equal');
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i];
  mean /= n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
  const a = coefficients(n);
  let b = 0;
  for (let i = 0; i < a.length; i++) b += a[i] * (x[n - 1 - i] - x[i]);
  const w = Math.min(1, (b * b) / ss);
  return { w, p: pValue(w, n), n };
}

function pValue(w: number, n: number): number {
  if (n === 3) {
    // Exact for n = 3: p = (6/π)(asin √W − asin √(3/4)).
    return Math.max(0, Math.min(1, (6 / Math.PI) * (Math.asin(Math.sqrt(w)) - Math.PI / 3)));
  }
  const w1 = Math.log(1 - w);
  if (!Number.isFinite(w1)) return 1;
  let y: number;
  let m: number;
  let s: number;
  if (n <= 11) {
    const gamma = poly(G, n);
    if (w1 >= gamma) return 1e-99; // AS R94's floor: W so small the transform is undefined.
    y = -Math.log(gamma - w1);
    m = poly(C3, n);
    s = Math.exp(poly(C4, n));
  } else {
    const ln = Math.log(n);
    y = w1;
    m = poly(C5, ln);
    s = Math.exp(poly(C6, ln));
  }
  return normalUpperTail((y - m) / s);
}
