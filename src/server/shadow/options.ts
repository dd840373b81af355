/**
 * The shadow attacker's options, one table: each setting has a name, a default and a parser whose
 * error says what to write. The middleware and the proxy check `shadow` with it once, when they are
 * built; `msd proxy` parses its --shadow-* flags and the config file's `shadow` object with the same
 * parsers (naming the flag or the file's field in its errors).
 */
import { ServingOptionError } from '../errors.js';

/** The owner's labelled held-out set, as the surrogate sees request inputs (the serving preprocessing applied). */
export interface ShadowHeldOut {
  /** rows × features model inputs, row-major. */
  x: Float32Array;
  /** One class index per row. */
  labels: ArrayLike<number>;
  /** Default: labels.length. */
  rows?: number;
  /**
   * The model's own answers (probabilities) on these rows, rows × classes, when the owner has them:
   * agreement is then also measured on the held-out set, with the model's and the defended accuracy.
   */
  answers?: Float32Array;
  /** Where it came from, for the start line (e.g. a path). */
  source?: string;
}

/**
 * The knockoffs' network: 'auto' (an MLP for flat inputs, the small LeNet-style CNN for image
 * inputs), 'mlp', 'lenet', 'cnn' (the evaluation's knockoff CNN), or a TF.js model (its model.json
 * or folder) re-initialised with seeded weights each round, as a surrogate given with --reinit is.
 */
export type ShadowArch = 'auto' | 'mlp' | 'lenet' | 'cnn' | (string & {});

/** How often a round runs: after a time, or once so many new rows were sampled. */
export type ShadowEvery = string | { seconds: number } | { samples: number };

export interface ShadowOptions {
  /** Labelled held-out data (required). */
  heldOut: ShadowHeldOut;
  /** Share of answered requests sampled, in (0, 1]. Default 0.1. */
  sample?: number;
  /** "300s", "5m", "1h", or "2000 samples" (new rows sampled); or { seconds } / { samples }. Default "300s". */
  every?: ShadowEvery;
  /** Default 'auto'. */
  arch?: ShadowArch;
  /** Share of one CPU core the training may use on average, in (0, 1]. Default 0.25. */
  cpu?: number;
  /** Rows kept per tier for training (the reservoir's bound). Default 4000. */
  capacity?: number;
  /** Share of the sampled rows held back from training, to measure agreement on, in [0, 0.5]. Default 0.2. */
  holdBack?: number;
  /** Memory for all reservoirs together, MiB; the capacity is lowered to fit. Default 256. */
  maxMemoryMb?: number;
  /** Training epochs of each knockoff per round. Default 10. */
  epochs?: number;
  /** Default 64. */
  batchSize?: number;
  /** Adam's step size. Default 0.001. */
  learningRate?: number;
  /** Rows a tier needs before its knockoffs train. Default 200. */
  minSamples?: number;
  /** Protection (original − defended accuracy) under which the alert fires; published as a gauge. */
  minProtection?: number;
  /** Shape of one input for the knockoff, e.g. [28, 28, 1]; default: as the requests say it. */
  inputShape?: readonly number[];
  /** Seeds the sampling, the knockoffs' weights and their shuffling. Default 1. */
  seed?: number;
  /** Where the knockoffs train: 'auto' (onnxruntime-node where installed), 'tfjs' or 'onnxruntime'. Default 'auto'. */
  engine?: 'auto' | 'tfjs' | 'onnxruntime';
}

export type ResolvedEvery = { seconds: number; samples?: undefined } | { samples: number; seconds?: undefined };

export interface ResolvedShadow {
  heldOut: Required<Pick<ShadowHeldOut, 'x' | 'rows'>> & { labels: Int32Array; answers?: Float32Array; features: number; source?: string };
  sample: number;
  every: ResolvedEvery;
  arch: ShadowArch;
  cpu: number;
  capacity: number;
  holdBack: number;
  maxMemoryMb: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  minSamples: number;
  minProtection?: number;
  inputShape?: readonly number[];
  seed: number;
  engine: 'auto' | 'tfjs' | 'onnxruntime';
}

type Parser<T> = (value: unknown, name: string) => T;

const fail = (name: string, expected: string, value: unknown): never => {
  throw new ServingOptionError(`${name} must be ${expected}, got ${JSON.stringify(value)}`);
};

/** A number from a number or its text (flags arrive as text). */
const numeric = (value: unknown): unknown => (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value)) ? Number(value) : value);

const share =
  (low: number, lowOpen: boolean, high: number, example: string): Parser<number> =>
  (value, name) => {
    const n = numeric(value);
    const ok = typeof n === 'number' && Number.isFinite(n) && (lowOpen ? n > low : n >= low) && n <= high;
    return ok ? (n as number) : fail(name, `a number in ${lowOpen ? '(' : '['}${low}, ${high}], e.g. ${example}`, value);
  };

const integerAtLeast =
  (min: number): Parser<number> =>
  (value, name) => {
    const n = numeric(value);
    return typeof n === 'number' && Number.isInteger(n) && n >= min ? n : fail(name, `an integer ≥ ${min}`, value);
  };

const positive: Parser<number> = (value, name) => {
  const n = numeric(value);
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? n : fail(name, 'a positive number', value);
};

const UNIT_SECONDS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600 };

/** "300s", "5m", "1h" → seconds; "2000 samples" → samples; { seconds } or { samples }. A bare number is refused: it could mean either. */
export const parseEvery: Parser<ResolvedEvery> = (value, name) => {
  const expected = 'a time such as "300s", "5m" or "1h", or a count of new samples such as "2000 samples"';
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    const { seconds, samples } = value as { seconds?: unknown; samples?: unknown };
    if (keys.length === 1 && seconds !== undefined) return { seconds: positive(seconds, `${name}.seconds`) };
    if (keys.length === 1 && samples !== undefined) return { samples: integerAtLeast(1)(samples, `${name}.samples`) };
    return fail(name, `${expected} (as an object: { "seconds": 300 } or { "samples": 2000 })`, value);
  }
  if (typeof value !== 'string') return fail(name, expected, value);
  const time = /^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$/i.exec(value);
  if (time) {
    const seconds = Number(time[1]) * UNIT_SECONDS[time[2].toLowerCase()];
    return seconds > 0 ? { seconds } : fail(name, expected, value);
  }
  const count = /^\s*(\d+)\s*(samples?|rows?)\s*$/i.exec(value);
  if (count && Number(count[1]) >= 1) return { samples: Number(count[1]) };
  return fail(name, expected, value);
};

export const SHADOW_ARCHS = ['auto', 'mlp', 'lenet', 'cnn'] as const;

const parseArch: Parser<ShadowArch> = (value, name) => {
  if (typeof value !== 'string' || value.trim() === '')
    return fail(name, `one of ${SHADOW_ARCHS.join(', ')}, or the path of a TF.js model (its model.json or folder) to re-initialise`, value);
  if (/\.onnx$/i.test(value)) {
    throw new ServingOptionError(
      `${name}: an ONNX file cannot be trained here (the training engine takes TF.js layers models); give the TF.js model, or one of ${SHADOW_ARCHS.join(', ')}`,
    );
  }
  return value;
};

const parseShape: Parser<readonly number[]> = (value, name) => {
  const list = typeof value === 'string' ? value.split(/[x×,]/).map((v) => numeric(v.trim())) : value;
  return Array.isArray(list) && list.length >= 1 && list.length <= 3 && list.every((d) => typeof d === 'number' && Number.isInteger(d) && d >= 1)
    ? (list as number[])
    : fail(name, 'the shape of one input, e.g. [28, 28, 1] or "28x28x1"', value);
};

const parseEngine: Parser<'auto' | 'tfjs' | 'onnxruntime'> = (value, name) =>
  value === 'auto' || value === 'tfjs' || value === 'onnxruntime' ? value : fail(name, 'one of auto, tfjs, onnxruntime', value);

/** Every setting but the held-out data (the library takes arrays, the command line paths), with its default. */
export const SHADOW_FIELDS = {
  sample: { parse: share(0, true, 1, '0.1'), default: 0.1 },
  every: { parse: parseEvery, default: { seconds: 300 } as ResolvedEvery },
  arch: { parse: parseArch, default: 'auto' as ShadowArch },
  cpu: { parse: share(0, true, 1, '0.25'), default: 0.25 },
  capacity: { parse: integerAtLeast(10), default: 4000 },
  holdBack: { parse: share(0, false, 0.5, '0.2'), default: 0.2 },
  maxMemoryMb: { parse: positive, default: 256 },
  epochs: { parse: integerAtLeast(1), default: 10 },
  batchSize: { parse: integerAtLeast(1), default: 64 },
  learningRate: { parse: positive, default: 0.001 },
  minSamples: { parse: integerAtLeast(2), default: 200 },
  minProtection: { parse: share(0, false, 1, '0.05'), default: undefined },
  inputShape: { parse: parseShape, default: undefined },
  seed: { parse: integerAtLeast(0), default: 1 },
  engine: { parse: parseEngine, default: 'auto' as const },
} as const;

export type ShadowFieldName = keyof typeof SHADOW_FIELDS;
export const SHADOW_FIELD_NAMES = Object.keys(SHADOW_FIELDS) as ShadowFieldName[];

/** Parses one setting (from a flag's text or a file's value); `name` is how the user wrote it. */
export function parseShadowField<K extends ShadowFieldName>(key: K, value: unknown, name: string): NonNullable<ReturnType<(typeof SHADOW_FIELDS)[K]['parse']>> {
  return SHADOW_FIELDS[key].parse(value, name) as NonNullable<ReturnType<(typeof SHADOW_FIELDS)[K]['parse']>>;
}

function resolveHeldOut(heldOut: unknown, where: string): ResolvedShadow['heldOut'] {
  const example = `${where} must be { x: Float32Array (rows × features, as the surrogate sees request inputs), labels: class indices, answers?: the model's probabilities on them }`;
  if (!heldOut || typeof heldOut !== 'object') throw new ServingOptionError(`${example}; it is required (the shadow scores its knockoffs on it)`);
  const { x, labels, rows: givenRows, answers, source } = heldOut as ShadowHeldOut;
  if (!(x instanceof Float32Array)) throw new ServingOptionError(`${where}.x must be a Float32Array; ${example}`);
  if (!labels || typeof labels !== 'object' || typeof labels.length !== 'number')
    throw new ServingOptionError(`${where}.labels must be an array of class indices; ${example}`);
  const rows = givenRows ?? labels.length;
  if (!Number.isInteger(rows) || rows < 1 || rows > labels.length)
    throw new ServingOptionError(`${where}.rows must be an integer in 1..${labels.length} (the labels), got ${JSON.stringify(givenRows)}`);
  if (x.length % rows !== 0 || x.length === 0) throw new ServingOptionError(`${where}.x holds ${x.length} values, not a whole number of rows for ${rows} rows`);
  const copy = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    const label = labels[i];
    if (!Number.isInteger(label) || label < 0)
      throw new ServingOptionError(`${where}.labels[${i}] must be a class index (an integer ≥ 0), got ${JSON.stringify(label)}`);
    copy[i] = label;
  }
  if (answers !== undefined && (!(answers instanceof Float32Array) || answers.length % rows !== 0 || answers.length / rows < 2)) {
    throw new ServingOptionError(`${where}.answers must be a Float32Array of rows × classes probabilities (the model's answers on the held-out rows)`);
  }
  return { x, rows, labels: copy, answers, features: x.length / rows, source: typeof source === 'string' ? source : undefined };
}

/** Checks `shadow` once; a bad value throws ServingOptionError naming it and saying what to write. */
export function resolveShadowOptions(options: unknown, where = 'shadow'): ResolvedShadow {
  if (!options || typeof options !== 'object' || Array.isArray(options)) {
    throw new ServingOptionError(`${where} must be an object, e.g. { heldOut: { x, labels }, sample: 0.1, every: "300s" }`);
  }
  const given = options as Record<string, unknown>;
  const unknown = Object.keys(given).filter((key) => key !== 'heldOut' && !(key in SHADOW_FIELDS));
  if (unknown.length) throw new ServingOptionError(`${where}: unknown option(s) ${unknown.join(', ')}; allowed: heldOut, ${SHADOW_FIELD_NAMES.join(', ')}`);
  const resolved: Record<string, unknown> = { heldOut: resolveHeldOut(given.heldOut, `${where}.heldOut`) };
  for (const key of SHADOW_FIELD_NAMES) {
    const value = given[key];
    resolved[key] = value === undefined ? SHADOW_FIELDS[key].default : SHADOW_FIELDS[key].parse(value, `${where}.${key}`);
  }
  const result = resolved as unknown as ResolvedShadow;
  if (result.inputShape && result.inputShape.reduce((a, b) => a * b, 1) !== result.heldOut.features) {
    throw new ServingOptionError(
      `${where}.inputShape [${result.inputShape.join(', ')}] holds ${result.inputShape.reduce((a, b) => a * b, 1)} values; the held-out rows have ${result.heldOut.features}`,
    );
  }
  if (result.heldOut.answers) {
    const classes = result.heldOut.answers.length / result.heldOut.rows;
    const bad = result.heldOut.labels.findIndex((l) => l >= classes);
    if (bad >= 0) throw new ServingOptionError(`${where}.heldOut.labels[${bad}] is ${result.heldOut.labels[bad]}, outside the answers' ${classes} classes`);
  }
  return result;
}
