/**
 * What an evaluation runs: the victim, the attacker's world, the defense settings, the attacker
 * families and budgets, and the training settings. Built from a preset (`quick`, `defenses`,
 * `adaptive`, `paper`, `ablation`) or a JSON config file; every mistake is reported with the field
 * that holds it and what is allowed.
 */
import { readFile } from 'node:fs/promises';
import { DefenseError, defenseNames, parseDefense, type Defense } from '../defenses/index.js';
import { ARCHITECTURES, type Architecture } from '../models/index.js';
import { z } from 'zod';
import {
  integerAtLeast,
  joinPath,
  nonEmptyText,
  numberIn,
  oneOfList,
  optionStyle,
  parseOptions,
  positiveInteger,
  positiveNumber,
  trueOrFalse,
} from '../validation/index.js';

export type VictimDataset = 'mnist' | 'fashion-mnist';
export type AttackerWorld = 'open' | 'closed';
/** How the Knockoff attacker picks its queries from its pool. */
export type KnockoffPolicy = 'random' | 'adaptive';
export type JbdaVariant = 'jbda' | 'jbself' | 'jbtop3';
/**
 * The attackers that adapt to the defense (attackers/): smoothing (augmented copies, averaged
 * answers), restorer (a D-DAE-style network that undoes a known defense), inversion (the closed-form
 * inverse of a known defense), and the restorer in front of JB-top3.
 */
export type AdaptiveAttacker = 'smoothing' | 'restorer' | 'inversion' | 'restorer-jbtop3';
/** An attacker family of the grid (the config field keeps its first name, `policies`). */
export type PolicyName = KnockoffPolicy | JbdaVariant | AdaptiveAttacker;
/** soft: trains on the (poisoned) probabilities; argmax: trains on their top-1 labels only (the top-1 attacker). */
export type AttackerLabels = 'soft' | 'argmax';

export const VICTIM_DATASETS: readonly VictimDataset[] = ['mnist', 'fashion-mnist'];
export const WORLDS: readonly AttackerWorld[] = ['open', 'closed'];
/** Every attacker family, in the order of the report's columns. */
export const POLICIES: readonly PolicyName[] = ['random', 'adaptive', 'smoothing', 'restorer', 'inversion', 'jbda', 'jbself', 'jbtop3', 'restorer-jbtop3'];
/** The families that know nothing of the defense (the detection evaluation's attackers). */
export const QUERY_POLICIES: readonly PolicyName[] = ['random', 'adaptive', 'jbda', 'jbself', 'jbtop3'];
/** Families that must know the defense (Kerckhoffs: its name and public parameters). */
export const DEFENSE_AWARE_POLICIES: readonly PolicyName[] = ['restorer', 'inversion', 'restorer-jbtop3'];
/** MAD's surrogate in the ablation (surrogate-kinds.ts). */
export type SurrogateKind = 'victim-arch' | 'small' | 'uniform';
export const SURROGATE_KINDS: readonly SurrogateKind[] = ['victim-arch', 'small', 'uniform'];

export const JBDA_VARIANTS: readonly JbdaVariant[] = ['jbda', 'jbself', 'jbtop3'];

/** The attacker family a run belongs to, as the report names it: knockoff-random, knockoff-adaptive, smoothing, restorer, inversion, jbda, jbself, jbtop3, restorer-jbtop3. */
export function attackerFamily(policy: PolicyName): string {
  return policy === 'random' || policy === 'adaptive' ? `knockoff-${policy}` : policy;
}

/**
 * One attacker of the report: a family and the labels its knockoff trains on. The Knockoff attacker
 * on top-1 labels is "top-1"; the other families' top-1 variants are "<family> top-1".
 */
export function attackerName(policy: PolicyName, labels: AttackerLabels): string {
  if (labels === 'soft') return attackerFamily(policy);
  return policy === 'random' ? 'top-1' : `${attackerFamily(policy)} top-1`;
}

/** Whether the family queries images of the attacker's pool (budgets must fit it). */
export function drawsFromPool(policy: PolicyName): boolean {
  return policy === 'random' || policy === 'adaptive' || policy === 'smoothing' || policy === 'restorer' || policy === 'inversion';
}
export const ATTACKER_LABELS: readonly AttackerLabels[] = ['soft', 'argmax'];

export interface TrainingSettings {
  arch: Architecture;
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Train on at most this many images (a seeded subset); all when unset. */
  maxRows?: number;
}

export interface AdaptiveSettings {
  /** Retrain the policy's knockoff after this many new queries (the loss reward needs it). */
  retrainEvery: number;
  /** Epochs of each interim retraining. */
  retrainEpochs: number;
  /** Step size of the bandit's preference update. */
  learningRate: number;
  /** Weights of the normalised certainty, diversity and loss rewards. */
  rewardWeights: { certainty: number; diversity: number; loss: number };
  /** How many recent answers the diversity reward compares with. */
  diversityWindow: number;
  /** Images sampled (and queried) per bandit step; one reward per image, one update per image. */
  stepSize: number;
}

/** The Jacobian-based attackers' settings (the prediction-poisoning paper's values by default). */
export interface JbdaSettings {
  /** Images of the victim's distribution the attacker starts from. */
  seedSize: number;
  /** Step λ of jbda / jbself (pixels in [0, 1]). */
  lambda: number;
  /** λ's sign flips every this many rounds (τ). */
  flipEvery: number;
  /** Epochs of each round's substitute (re-initialised every round). */
  roundEpochs: number;
  /** jbtop-k's targeted L∞ PGD. */
  pgd: { iterations: number; step: number; radius: number };
}

export const DEFAULT_JBDA: JbdaSettings = { seedSize: 100, lambda: 0.1, flipEvery: 5, roundEpochs: 20, pgd: { iterations: 8, step: 0.01, radius: 0.1 } };

/** The smoothing attacker: m augmented copies per image, every copy a query, the answers averaged. */
export interface SmoothingSettings {
  /** Queries per image (ModelGuard's harness: 3); the first copy is the image itself. */
  copies: number;
  /** Largest shift in pixels, each axis (uniform integer in [−shift, shift]). */
  shift: number;
  /** Standard deviation of Gaussian pixel noise (pixels in [0, 1], quantised to 1/255 afterwards). */
  noise: number;
  /** Horizontal flips: "auto" allows them where the victim's domain does (FashionMNIST, not digits). */
  flip: boolean | 'auto';
}

export const DEFAULT_SMOOTHING: SmoothingSettings = { copies: 3, shift: 2, noise: 0.02, flip: 'auto' };

/**
 * The restorer (D-DAE-style): a shadow model trained on the first part of the budget, the known
 * defense applied to its answers with the attacker's own surrogate, and a K→hidden→K network
 * trained to map defended answers back to clean ones.
 */
export interface RestorerSettings {
  /** Share of the budget whose answers train the shadow model (they are restored and used too). */
  shadowFraction: number;
  /** Epochs of the shadow model (the knockoff's architecture, on the answers' top-1 labels). */
  shadowEpochs: number;
  /** Width of the restorer's hidden layer. */
  hidden: number;
  /** Epochs of the restorer. */
  epochs: number;
  /** (defended, clean) pairs it trains on: shadow answers on the attacker's own images. */
  pairs: number;
  /**
   * Softmax temperatures for the shadow's logits: each pair's is drawn log-uniformly between the
   * smallest and the largest, so the pairs cover confident and unsure answers; as many draws per image
   * as values listed.
   */
  temperatures: number[];
  /** Half the draws use synthetic answers of every confidence instead of the shadow's (true) or none (false). */
  synthetic: boolean;
  /** Share of the pairs held out to measure the restorer (mean L1 to the clean answers). */
  heldOut: number;
}

export const DEFAULT_RESTORER: RestorerSettings = {
  shadowFraction: 0.2,
  shadowEpochs: 10,
  hidden: 128,
  epochs: 30,
  pairs: 20000,
  temperatures: [0.1, 0.3, 1, 3],
  synthetic: true,
  heldOut: 0.1,
};

/** Caps on the data used, for smoke tests and tiny runs (undefined: everything). */
export interface DataLimits {
  victimTrain?: number;
  victimTest?: number;
  attackerPool?: number;
}

/** One defense setting of the grid. */
export interface DefenseSetting {
  /** Curve the setting belongs to in the plots, e.g. "mad-argmax". */
  family: string;
  /** Canonical spec string (what the run key and the report use). */
  spec: string;
  /** The parameters, as written in the report ("eps=0.5,norm=l1,…"). */
  params: string;
  /** A ready defense instead of the spec (programmatic use, tests). */
  defense?: Defense;
  /** MAD's surrogate for this setting (the ablation); the evaluation's default surrogate when unset. */
  surrogate?: SurrogateKind;
}

export interface EvalConfig {
  /** Preset or config-file name; the default results folder is results/<name>. */
  name: string;
  victim: VictimDataset;
  world: AttackerWorld;
  seed: number;
  /** Each setting is run with this many attacker seeds (victim fixed); the report shows mean ± 95% CI. */
  seeds: number;
  defenses: DefenseSetting[];
  policies: PolicyName[];
  budgets: number[];
  attackerLabels: AttackerLabels[];
  victimTraining: TrainingSettings;
  knockoffTraining: TrainingSettings;
  /** Architecture of MAD's surrogate (the paper's best: randomly initialised, victim's architecture). */
  surrogateArch: Architecture;
  /** Training of the misinformation model (only when a misinformation defense is in the grid). */
  misinformationTraining: TrainingSettings;
  adaptive: AdaptiveSettings;
  jbda: JbdaSettings;
  smoothing: SmoothingSettings;
  restorer: RestorerSettings;
  /** Rows per HTTP request to the defended endpoint. */
  requestRows: number;
  /** Closed world: images of the victim's training split held out for the attacker. */
  closedWorldPool: number;
  limits: DataLimits;
}

export class EvalConfigError extends Error {
  override name = 'EvalConfigError';
}

const DEFAULT_ADAPTIVE: AdaptiveSettings = {
  retrainEvery: 1000,
  // The policy's knockoff keeps its weights between retrainings, so one pass over the transfer set suffices.
  retrainEpochs: 1,
  learningRate: 0.1,
  rewardWeights: { certainty: 1, diversity: 1, loss: 1 },
  diversityWindow: 256,
  stepSize: 32,
};

const DEFAULT_BASE: Omit<EvalConfig, 'name' | 'defenses' | 'policies' | 'budgets'> = {
  victim: 'mnist',
  world: 'open',
  seed: 1,
  seeds: 1,
  attackerLabels: ['soft', 'argmax'],
  victimTraining: { arch: 'mlp', epochs: 5, batchSize: 128, learningRate: 0.001 },
  // The victims are images: the knockoff is a CNN (the MLP stays available as "mlp").
  knockoffTraining: { arch: 'cnn', epochs: 5, batchSize: 128, learningRate: 0.001 },
  surrogateArch: 'mlp',
  misinformationTraining: { arch: 'mlp', epochs: 1, batchSize: 128, learningRate: 0.001, maxRows: 10000 },
  adaptive: DEFAULT_ADAPTIVE,
  jbda: DEFAULT_JBDA,
  smoothing: DEFAULT_SMOOTHING,
  restorer: DEFAULT_RESTORER,
  requestRows: 256,
  closedWorldPool: 20000,
  limits: {},
};

/** Grid entries as a config file writes them: a spec string, or a name with (lists of) parameters. */
export type DefenseEntry = string | { name: string; family?: string; params?: Record<string, unknown>; [param: string]: unknown };

/**
 * The `adaptive` preset's settings: every family at its ≤ 1 point setting: the `defenses` table of
 * docs/measurements/evaluation-results.md, keyed noise (the smoothing attacker's target), and the newer defenses
 * when the registry has them. ModelGuard-W/S keep every top-1 label; the defender side of each
 * setting is in docs/measurements/evaluation-results.md (attackers that know the defense).
 */
export function adaptivePresetDefenses(): DefenseEntry[] {
  const registered = new Set(defenseNames());
  const newer: DefenseEntry[] = [];
  if (registered.has('modelguard-w')) newer.push('modelguard-w:eps=1');
  if (registered.has('modelguard-s')) newer.push('modelguard-s:eps=0.5');
  if (registered.has('grad2')) newer.push('grad2:eps=0.5');
  return [...PRESET_DEFENSES.defenses, 'noise:scale=1', ...newer];
}

/** The `adaptive` preset's attackers: every family but the Knockoff bandit (tied with random on this pool). */
export const ADAPTIVE_PRESET_POLICIES: readonly PolicyName[] = ['random', 'smoothing', 'restorer', 'inversion', 'jbda', 'jbself', 'jbtop3', 'restorer-jbtop3'];

const PRESET_DEFENSES: Record<'quick' | 'defenses' | 'paper', DefenseEntry[]> = {
  // The flagship question (does MAD cost the attacker, against no defense?) in about 20 minutes on 2 cores.
  quick: ['none', 'mad:eps=0.5', 'mad-argmax:eps=1'],
  // One setting per family the comparison needs, each at ≤ 1 point of defender accuracy (misinformation τ = 0.9
  // costs 3.3 points); rounding (which leaves a knockoff untouched at 1 decimal) is in `paper`.
  defenses: ['none', 'argmax', 'reverse-sigmoid:beta=0.5,gamma=0.2', 'mad:eps=0.5', 'mad-argmax:eps=1', 'misinformation:tau=0.7'],
  paper: [
    'none',
    'argmax',
    { name: 'topk', k: [1, 3] },
    { name: 'rounding', decimals: [0, 1, 2] },
    { name: 'noise', scale: [0.5, 1, 2, 4] },
    { name: 'reverse-sigmoid', gamma: 0.2, beta: [0.1, 0.2, 0.3, 0.5, 0.7, 1] },
    { name: 'mad', eps: [0.05, 0.1, 0.25, 0.5, 1, 1.5] },
    { name: 'mad-argmax', eps: [0.25, 0.5, 1, 1.5, 1.9] },
    { name: 'misinformation', tau: [0.5, 0.7, 0.9, 0.95, 0.99] },
  ],
};

export const PRESET_NAMES = ['quick', 'defenses', 'adaptive', 'paper', 'ablation'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

const quotedOneOf = <T extends string>(choices: readonly T[]) => oneOfList(choices, `one of ${choices.map((c) => `"${c}"`).join(', ')}`);
const positiveInt = positiveInteger();
const positiveNum = positiveNumber('a number > 0');
const nonNegative = numberIn({ min: 0 }, 'a number >= 0');
/** A share of something: strictly between 0 and `max`. */
const fraction = (max: number) => numberIn({ min: 0, max, minExclusive: true, maxExclusive: true }, `in (0, ${max})`);
const nonEmptyList = <S extends z.ZodType>(item: S) => z.array(item, { error: 'a non-empty list' }).min(1, { error: 'a non-empty list' });

/** A section of the config: an object whose error lists its fields, each optional (the base fills the rest). */
const section = <S extends z.ZodRawShape>(shape: S) =>
  z.strictObject(shape, { error: `an object with the fields ${Object.keys(shape).join(', ')}` }).optional();

const SURROGATE_KIND = quotedOneOf(SURROGATE_KINDS);

/** A grid entry: a spec string, or a name with (lists of) parameters, flat or under `params`. */
const defenseEntrySchema = z.union(
  [
    z.string(),
    z.looseObject({
      name: z.string({ error: 'a defense name such as "mad"' }),
      family: nonEmptyText().optional(),
      params: z.record(z.string(), z.unknown(), { error: 'an object' }).optional(),
      surrogate: z
        .union([SURROGATE_KIND, nonEmptyList(SURROGATE_KIND)], { error: `one of ${SURROGATE_KINDS.map((k) => `"${k}"`).join(', ')}, or a list of them` })
        .optional(),
    }),
  ],
  { error: 'a spec string such as "mad:eps=0.5" or an object {"name": "mad", "eps": [0.1, 0.5]}' },
);

const trainingSchema = section({
  arch: quotedOneOf(ARCHITECTURES).optional(),
  epochs: positiveInt.optional(),
  batchSize: positiveInt.optional(),
  learningRate: positiveNum.optional(),
  maxRows: positiveInt.optional(),
} satisfies Record<keyof TrainingSettings, z.ZodType>);

/** What a config file (or code) may set; anything else is a typo and is reported with the allowed fields. */
const configSchema = z.strictObject({
  name: z
    .string({ error: 'a non-empty string' })
    .refine((name) => name.trim() !== '', { error: 'a non-empty string' })
    .optional(),
  preset: quotedOneOf(PRESET_NAMES).optional(),
  victim: quotedOneOf(VICTIM_DATASETS).optional(),
  world: quotedOneOf(WORLDS).optional(),
  seed: integerAtLeast(Number.MIN_SAFE_INTEGER, 'an integer').optional(),
  seeds: positiveInt.optional(),
  defenses: nonEmptyList(defenseEntrySchema).optional(),
  policies: nonEmptyList(quotedOneOf(POLICIES)).optional(),
  budgets: nonEmptyList(positiveInt).optional(),
  attackerLabels: nonEmptyList(quotedOneOf(ATTACKER_LABELS)).optional(),
  victimTraining: trainingSchema,
  knockoffTraining: trainingSchema,
  surrogateArch: quotedOneOf(ARCHITECTURES).optional(),
  misinformationTraining: trainingSchema,
  adaptive: section({
    retrainEvery: positiveInt.optional(),
    retrainEpochs: positiveInt.optional(),
    learningRate: positiveNum.optional(),
    rewardWeights: section({ certainty: nonNegative.optional(), diversity: nonNegative.optional(), loss: nonNegative.optional() }),
    diversityWindow: positiveInt.optional(),
    stepSize: positiveInt.optional(),
  } satisfies Record<keyof AdaptiveSettings, z.ZodType>),
  jbda: section({
    seedSize: positiveInt.optional(),
    lambda: positiveNum.optional(),
    flipEvery: positiveInt.optional(),
    roundEpochs: positiveInt.optional(),
    pgd: section({ iterations: positiveInt.optional(), step: positiveNum.optional(), radius: positiveNum.optional() }),
  } satisfies Record<keyof JbdaSettings, z.ZodType>),
  smoothing: section({
    copies: integerAtLeast(2, 'at least 2 (one query per image is the plain Knockoff attacker)').optional(),
    shift: integerAtLeast(0, 'an integer ≥ 0 (pixels)').optional(),
    noise: nonNegative.optional(),
    flip: z.union([z.boolean(), z.literal('auto')], { error: 'true, false or "auto"' }).optional(),
  } satisfies Record<keyof SmoothingSettings, z.ZodType>),
  restorer: section({
    shadowFraction: fraction(1).optional(),
    shadowEpochs: positiveInt.optional(),
    hidden: positiveInt.optional(),
    epochs: positiveInt.optional(),
    pairs: positiveInt.optional(),
    temperatures: nonEmptyList(positiveNum).optional(),
    synthetic: trueOrFalse().optional(),
    heldOut: fraction(0.5).optional(),
  } satisfies Record<keyof RestorerSettings, z.ZodType>),
  requestRows: positiveInt.optional(),
  closedWorldPool: positiveInt.optional(),
  limits: section({ victimTrain: positiveInt.optional(), victimTest: positiveInt.optional(), attackerPool: positiveInt.optional() } satisfies Record<
    keyof DataLimits,
    z.ZodType
  >),
});

type RawConfig = z.output<typeof configSchema>;

const style = optionStyle(EvalConfigError, '', {
  unknownKeys: (_name, keys, allowed, path) =>
    path.length === 0
      ? `unknown config field "${keys[0]}"; allowed: ${allowed.join(', ')}`
      : `unknown field "${joinPath('', [...path, keys[0]])}"; allowed: ${allowed.join(', ')}`,
});

export function presetConfig(name: PresetName): EvalConfig {
  if (name === 'quick' || name === 'defenses') {
    return validateConfig({
      name,
      defenses: PRESET_DEFENSES[name],
      policies: ['random'],
      budgets: [10000],
      seeds: 3,
      // The attacker is the full calibrated one (CNN, 15 epochs on 10k queries); the grid is what is trimmed:
      // `quick` compares MAD with no defense, `defenses` adds one setting per other family. Each run trains
      // two knockoffs on its answers, on the soft answers and on their top-1 labels: the report's worst case
      // is over both (a defense that keeps top-1 cannot beat the top-1 attacker).
      attackerLabels: ['soft', 'argmax'],
      victimTraining: { arch: 'mlp', epochs: 5, batchSize: 128, learningRate: 0.001 },
      knockoffTraining: { arch: 'cnn', epochs: 15, batchSize: 128, learningRate: 0.001 },
    });
  }
  if (name === 'adaptive') {
    // What does the best attacker still get? Every family at its ≤ 1 point setting against every attacker.
    return validateConfig({
      name: 'adaptive',
      defenses: adaptivePresetDefenses(),
      policies: [...ADAPTIVE_PRESET_POLICIES],
      budgets: [10000],
      seeds: 3,
      attackerLabels: ['soft', 'argmax'],
      victimTraining: { arch: 'mlp', epochs: 5, batchSize: 128, learningRate: 0.001 },
      knockoffTraining: { arch: 'cnn', epochs: 15, batchSize: 128, learningRate: 0.001 },
    });
  }
  if (name === 'paper') {
    return validateConfig({
      name: 'paper',
      defenses: PRESET_DEFENSES.paper,
      policies: ['random', 'adaptive'],
      budgets: [1000, 5000, 10000, 20000, 50000],
      // 33 settings × 2 policies × 5 budgets × 3 seeds of a CNN knockoff: days on 2 cores; meant for many cores (--jobs).
      victimTraining: { arch: 'mlp', epochs: 10, batchSize: 128, learningRate: 0.001 },
      seeds: 3,
      knockoffTraining: { arch: 'cnn', epochs: 15, batchSize: 128, learningRate: 0.001 },
      misinformationTraining: { arch: 'mlp', epochs: 2, batchSize: 128, learningRate: 0.001 },
      adaptive: { ...DEFAULT_ADAPTIVE, retrainEvery: 2000 },
    });
  }
  if (name === 'ablation') {
    // MAD's surrogate at one ε: the victim's architecture at random, a small random network, a constant (uniform) one.
    return validateConfig({
      name: 'ablation',
      defenses: ['none', { name: 'mad', eps: 0.5, surrogate: ['victim-arch', 'small', 'uniform'] }],
      policies: ['random'],
      budgets: [10000],
      knockoffTraining: { arch: 'mlp', epochs: 12, batchSize: 128, learningRate: 0.001 },
    });
  }
  throw new EvalConfigError(`unknown preset "${String(name)}"; allowed: ${PRESET_NAMES.join(', ')}`);
}

/** Reads a JSON config file: a full grid, or `"preset": "quick"` plus the fields to change. */
export async function loadConfigFile(file: string): Promise<EvalConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new EvalConfigError(`cannot read config file ${file}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new EvalConfigError(`config file ${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (!isObject(raw)) throw new EvalConfigError(`config file ${file} must hold a JSON object`);
  const fallbackName = file.replace(/^.*[\\/]/, '').replace(/\.json$/i, '');
  return validateConfig({ name: fallbackName, ...raw });
}

/**
 * Checks a raw config (from JSON or code) and fills the defaults. With `preset`, the preset's
 * values are the defaults and the raw fields replace them.
 */
export function validateConfig(input: Record<string, unknown>): EvalConfig {
  const raw = parseOptions(configSchema, input, style);
  let base: Omit<EvalConfig, 'name' | 'defenses' | 'policies' | 'budgets'> & Partial<EvalConfig> = DEFAULT_BASE;
  if (raw.preset !== undefined) base = presetConfig(raw.preset);
  const name = raw.name === undefined ? (base.name ?? 'custom') : raw.name.trim();
  if (!/^[\w.-]+$/.test(name))
    throw new EvalConfigError(`name must hold only letters, digits, ".", "_" and "-" (it names the results folder), got ${JSON.stringify(name)}`);

  const budgets = raw.budgets ?? requireBase('budgets', base.budgets);
  const config: EvalConfig = {
    name,
    victim: raw.victim ?? base.victim,
    world: raw.world ?? base.world,
    seed: raw.seed ?? base.seed,
    seeds: raw.seeds ?? base.seeds,
    defenses: raw.defenses === undefined ? requireBase('defenses', base.defenses) : expandDefenses(raw.defenses),
    policies: raw.policies === undefined ? requireBase('policies', base.policies) : unique('policies', raw.policies),
    budgets: [...new Set(budgets)].sort((a, b) => a - b),
    attackerLabels: raw.attackerLabels === undefined ? base.attackerLabels : unique('attackerLabels', raw.attackerLabels),
    victimTraining: { ...base.victimTraining, ...defined(raw.victimTraining) },
    knockoffTraining: { ...base.knockoffTraining, ...defined(raw.knockoffTraining) },
    surrogateArch: raw.surrogateArch ?? base.surrogateArch,
    misinformationTraining: { ...base.misinformationTraining, ...defined(raw.misinformationTraining) },
    adaptive: adaptive(raw.adaptive, base.adaptive),
    jbda: raw.jbda === undefined ? base.jbda : { ...base.jbda, ...defined(raw.jbda), pgd: { ...base.jbda.pgd, ...defined(raw.jbda.pgd) } },
    smoothing: { ...base.smoothing, ...defined(raw.smoothing) },
    restorer: { ...base.restorer, ...defined(raw.restorer) },
    requestRows: raw.requestRows ?? base.requestRows,
    closedWorldPool: raw.closedWorldPool ?? base.closedWorldPool,
    limits: { ...base.limits, ...defined(raw.limits) },
  };
  checkBudgetsFit(config);
  return config;
}

/** The fields that were given (an undefined one keeps the base's value). */
function defined<T extends object>(section: T | undefined): Partial<T> {
  return Object.fromEntries(Object.entries(section ?? {}).filter(([, value]) => value !== undefined)) as Partial<T>;
}

function adaptive(raw: RawConfig['adaptive'], base: AdaptiveSettings): AdaptiveSettings {
  if (raw === undefined) return base;
  const rewardWeights = { ...base.rewardWeights, ...defined(raw.rewardWeights) };
  if (raw.rewardWeights !== undefined && rewardWeights.certainty + rewardWeights.diversity + rewardWeights.loss === 0) {
    throw new EvalConfigError('adaptive.rewardWeights are all 0; give at least one reward a positive weight');
  }
  return { ...base, ...defined(raw), rewardWeights };
}

/** Replaces the world (CLI override); budgets that no longer fit the attacker's pool are an error. */
export function withWorld(config: EvalConfig, world: AttackerWorld): EvalConfig {
  const next = { ...config, world };
  checkBudgetsFit(next);
  return next;
}

/** How many images the attacker may draw from, before data limits. */
export function attackerPoolCapacity(config: EvalConfig): number | undefined {
  const pool = config.world === 'closed' ? config.closedWorldPool : undefined;
  const limit = config.limits.attackerPool;
  if (pool === undefined) return limit;
  return limit === undefined ? pool : Math.min(pool, limit);
}

function checkBudgetsFit(config: EvalConfig): void {
  // The Knockoff policies and the families built on them draw from the pool (smoothing one image per
  // `copies` queries); the Jacobian-based attackers synthesise their queries.
  const pooled = config.policies.filter(drawsFromPool);
  if (pooled.length === 0) return;
  const capacity = attackerPoolCapacity(config);
  const largestBudget = config.budgets[config.budgets.length - 1];
  const largest = pooled.every((p) => p === 'smoothing') ? Math.ceil(largestBudget / config.smoothing.copies) : largestBudget;
  if (capacity !== undefined && largest > capacity) {
    const where =
      config.world === 'closed' && capacity === config.closedWorldPool
        ? `the closed-world pool (closedWorldPool = ${capacity})`
        : `limits.attackerPool (${capacity})`;
    throw new EvalConfigError(`budget ${largest} exceeds ${where}: the random policy draws without replacement; lower the budgets or raise the pool`);
  }
}

/** Expands the grid: array-valued parameters give one setting per value (cartesian product). */
export function expandDefenses(raw: unknown): DefenseSetting[] {
  const entries = parseOptions(nonEmptyList(defenseEntrySchema), raw, { ...style, name: (path) => joinPath('defenses', path) });
  const settings: DefenseSetting[] = [];
  entries.forEach((entry, index) => {
    const field = `defenses[${index}]`;
    if (typeof entry === 'string') {
      settings.push(settingFromSpec(field, entry));
      return;
    }
    const { name, family, params, surrogate, ...flat } = entry;
    const kinds: (SurrogateKind | undefined)[] = surrogate === undefined ? [undefined] : Array.isArray(surrogate) ? surrogate : [surrogate];
    const all = { ...flat, ...(params ?? {}) } as Record<string, unknown>;
    const keys = Object.keys(all);
    const values = keys.map((k) => {
      const v = all[k];
      if (Array.isArray(v)) {
        if (v.length === 0) throw new EvalConfigError(`${field}.${k} is an empty list`);
        return v;
      }
      return [v];
    });
    for (const combination of cartesian(values)) {
      const params = Object.fromEntries(keys.map((k, i) => [k, combination[i]]));
      const setting = settingFromSpec(field, { name, params }, family);
      for (const kind of kinds) settings.push(kind === undefined ? setting : withSurrogate(field, setting, kind));
    }
  });
  if (settings.length === 0) throw new EvalConfigError('defenses is empty; list at least one setting, e.g. ["none", "mad:eps=0.5"]');
  const seen = new Set<string>();
  for (const s of settings) {
    if (seen.has(s.spec)) throw new EvalConfigError(`defense setting "${s.spec}" appears twice in the grid`);
    seen.add(s.spec);
  }
  return settings;
}

/**
 * The setting with its own MAD surrogate: a curve of its own ("mad/small-surrogate") and a spec of
 * its own (the run key and the report tell the kinds apart); the ready defense is kept.
 */
function withSurrogate(field: string, setting: DefenseSetting, kind: SurrogateKind): DefenseSetting {
  const defense = setting.defense ?? parseDefense(setting.spec);
  if (!defense.needs.includes('surrogate') && !defense.needs.includes('surrogateGram')) {
    throw new EvalConfigError(`${field}.surrogate: "${setting.spec}" uses no surrogate; the surrogate kind applies to mad and mad-argmax`);
  }
  return {
    family: `${setting.family}/${kind}-surrogate`,
    spec: `${setting.spec} @ surrogate=${kind}`,
    params: [setting.params, `surrogate=${kind}`].filter(Boolean).join(','),
    defense,
    surrogate: kind,
  };
}

function settingFromSpec(field: string, spec: string | { name: string; params: Record<string, unknown> }, family?: string): DefenseSetting {
  let defense: Defense;
  try {
    defense = parseDefense(spec);
  } catch (error) {
    if (error instanceof DefenseError) throw new EvalConfigError(`${field}: ${error.message}`);
    throw error;
  }
  return describeDefense(defense, family);
}

/** The setting that describes a ready defense: its family (the plot's curve) and its parameters. */
export function describeDefense(defense: Defense, family?: string): DefenseSetting {
  const stages = defense.spec.split('|');
  const params = stages
    .map((stage) => (stage.includes(':') ? stage.slice(stage.indexOf(':') + 1) : ''))
    .filter(Boolean)
    .join('|');
  const inferred = stages
    .map((stage) => {
      const name = stage.split(':')[0];
      return name === 'mad' && /(^|[:,])oracle=argmax(,|$)/.test(stage) ? 'mad-argmax' : name;
    })
    .join('|');
  return { family: family ?? inferred, spec: defense.spec, params };
}

function cartesian(values: unknown[][]): unknown[][] {
  return values.reduce<unknown[][]>((acc, options) => acc.flatMap((prefix) => options.map((o) => [...prefix, o])), [[]]);
}

function requireBase<T>(field: string, value: T | undefined): T {
  if (value === undefined) throw new EvalConfigError(`"${field}" is required (or set "preset": "quick" to start from a preset)`);
  return value;
}

function unique<T>(field: string, values: T[]): T[] {
  if (new Set(values).size !== values.length) throw new EvalConfigError(`${field} lists a value twice: ${JSON.stringify(values)}`);
  return values;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
