/**
 * The shadow attacker's options, one table: each setting has a name, a default and a schema whose
 * error says what to write. The middleware and the proxy check `shadow` with it once, when they are
 * built; `msd proxy` parses its --shadow-* flags and the config file's `shadow` object with the same
 * schemas (naming the flag or the file's field in its errors).
 */
import { z } from 'zod';
import { fromText, integerAtLeast, numericText, oneOf, optionStyle, parseOptions, positiveNumber, SENTENCE, share } from '../../validation/index.js';
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

const EVERY = 'a time such as "300s", "5m" or "1h", or a count of new samples such as "2000 samples"';
const UNIT_SECONDS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600 };

/** "300s", "5m", "1h" → seconds; "2000 samples" → samples; undefined for anything else. */
function everyFromText(value: string): ResolvedEvery | undefined {
  const time = /^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$/i.exec(value);
  if (time) {
    const seconds = Number(time[1]) * UNIT_SECONDS[time[2].toLowerCase()];
    return seconds > 0 ? { seconds } : undefined;
  }
  const count = /^\s*(\d+)\s*(samples?|rows?)\s*$/i.exec(value);
  return count && Number(count[1]) >= 1 ? { samples: Number(count[1]) } : undefined;
}

/** `every`: a time or a count of samples, as text or as { seconds } / { samples }. A bare number is refused: it could mean either. */
const everySchema = z
  .union(
    [
      z.string().meta({ examples: ['300s', '5m', '1h', '2000 samples'] }),
      z.strictObject({ seconds: fromText(positiveNumber()) }),
      z.strictObject({ samples: fromText(integerAtLeast(1)) }),
    ],
    { error: `${EVERY} (as an object: { "seconds": 300 } or { "samples": 2000 })` },
  )
  .transform((value, ctx): ResolvedEvery => {
    if (typeof value !== 'string') return value as ResolvedEvery;
    const every = everyFromText(value);
    if (every) return every;
    ctx.issues.push({ code: 'custom', message: EVERY, input: value });
    return z.NEVER;
  });

export const SHADOW_ARCHS = ['auto', 'mlp', 'lenet', 'cnn'] as const;

const ARCH = `one of ${SHADOW_ARCHS.join(', ')}, or the path of a TF.js model (its model.json or folder) to re-initialise`;

const archSchema = z
  .string({ error: ARCH })
  .refine((value) => value.trim() !== '', { error: ARCH })
  .superRefine((value, ctx) => {
    if (/\.onnx$/i.test(value))
      ctx.addIssue({
        code: 'custom',
        params: SENTENCE,
        message: `: an ONNX file cannot be trained here (the training engine takes TF.js layers models); give the TF.js model, or one of ${SHADOW_ARCHS.join(', ')}`,
      });
  })
  .meta({ examples: [...SHADOW_ARCHS] }) as z.ZodType<ShadowArch>;

const SHAPE = 'the shape of one input, e.g. [28, 28, 1] or "28x28x1"';

const shapeSchema = z.preprocess(
  (value) => (typeof value === 'string' ? value.split(/[x×,]/).map((v) => numericText(v.trim())) : value),
  z.array(integerAtLeast(1, SHAPE), { error: SHAPE }).min(1, { error: SHAPE }).max(3, { error: SHAPE }),
);

/** Every setting but the held-out data (the library takes arrays, the command line paths): its schema and its default. */
export const SHADOW_FIELDS = {
  sample: { schema: fromText(share('0.1')).meta({ description: 'share of answered requests sampled, in (0, 1]' }), default: 0.1 },
  every: {
    schema: everySchema.meta({ description: 'how often a round runs: "300s", "5m", "1h", or "2000 samples" (new rows sampled); or { seconds } / { samples }' }),
    default: { seconds: 300 } as ResolvedEvery,
  },
  arch: { schema: archSchema.meta({ description: ARCH }), default: 'auto' as ShadowArch },
  cpu: { schema: fromText(share('0.25')).meta({ description: 'share of one CPU core the training may use on average, in (0, 1]' }), default: 0.25 },
  capacity: { schema: fromText(integerAtLeast(10)).meta({ description: 'rows kept per tier for training' }), default: 4000 },
  holdBack: {
    schema: fromText(share('0.2', { lowOpen: false, high: 0.5 })).meta({
      description: 'share of the sampled rows held back from training to measure agreement on',
    }),
    default: 0.2,
  },
  maxMemoryMb: { schema: fromText(positiveNumber()).meta({ description: 'memory for all reservoirs together, MiB' }), default: 256 },
  epochs: { schema: fromText(integerAtLeast(1)).meta({ description: 'training epochs of each knockoff per round' }), default: 10 },
  batchSize: { schema: fromText(integerAtLeast(1)).meta({ description: 'training batch size' }), default: 64 },
  learningRate: { schema: fromText(positiveNumber()).meta({ description: 'Adam’s step size' }), default: 0.001 },
  minSamples: { schema: fromText(integerAtLeast(2)).meta({ description: 'rows a tier needs before its knockoffs train' }), default: 200 },
  minProtection: {
    schema: fromText(share('0.05', { lowOpen: false })).meta({ description: 'protection (original − defended accuracy) under which the alert fires' }),
    default: undefined,
  },
  inputShape: { schema: shapeSchema.meta({ description: SHAPE }), default: undefined },
  seed: { schema: fromText(integerAtLeast(0)).meta({ description: 'seeds the sampling, the knockoffs’ weights and their shuffling' }), default: 1 },
  engine: {
    schema: oneOf(['auto', 'tfjs', 'onnxruntime']).meta({
      description: 'where the knockoffs train: auto (onnxruntime-node where installed), tfjs or onnxruntime',
    }),
    default: 'auto' as const,
  },
} as const;

export type ShadowFieldName = keyof typeof SHADOW_FIELDS;
export const SHADOW_FIELD_NAMES = Object.keys(SHADOW_FIELDS) as ShadowFieldName[];

/** The settings' schemas, each optional: what an object of shadow settings may hold besides the held-out data. */
export const SHADOW_FIELD_SCHEMAS = Object.fromEntries(SHADOW_FIELD_NAMES.map((key) => [key, SHADOW_FIELDS[key].schema.optional()])) as {
  [K in ShadowFieldName]: z.ZodOptional<(typeof SHADOW_FIELDS)[K]['schema']>;
};

type ShadowValue<K extends ShadowFieldName> = NonNullable<z.output<(typeof SHADOW_FIELDS)[K]['schema']>>;

/** Parses one setting (from a flag's text or a file's value); `name` is how the user wrote it. */
export function parseShadowField<K extends ShadowFieldName>(key: K, value: unknown, name: string): ShadowValue<K> {
  return parseOptions(SHADOW_FIELDS[key].schema, value, optionStyle(ServingOptionError, name)) as ShadowValue<K>;
}

/** `every` alone (a flag's text or an option's value); `name` is how the user wrote it. */
export const parseEvery = (value: unknown, name: string): ResolvedEvery => parseShadowField('every', value, name);

/** The `shadow` option: the held-out data (checked below, it holds typed arrays) and the settings. */
const shadowOptionsSchema = z.strictObject(
  { heldOut: z.unknown().optional(), ...SHADOW_FIELD_SCHEMAS },
  { error: 'an object, e.g. { heldOut: { x, labels }, sample: 0.1, every: "300s" }' },
);

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
  const given = parseOptions(shadowOptionsSchema, options, optionStyle(ServingOptionError, where));
  const resolved: Record<string, unknown> = { heldOut: resolveHeldOut(given.heldOut, `${where}.heldOut`) };
  for (const key of SHADOW_FIELD_NAMES) resolved[key] = given[key] === undefined ? SHADOW_FIELDS[key].default : given[key];
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
