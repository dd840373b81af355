/**
 * Start-up checks that a surrogate can steer MAD at all. Two ways it cannot:
 *
 * - It IS the victim (e.g. the served model's own files loaded without reinit). Then its softmax p
 *   equals every answer y, the last-layer geometry is degenerate (Gᵀy ∝ p − y = 0) and MAD's oracle
 *   falls back to the target farthest from y: with mad-argmax every answer gets the same fallback,
 *   its mass spread evenly over the other classes. Found for sure by comparing weights when the
 *   victim's files or object are known (a SHA-256 of each float weight tensor's values, quantized
 *   weights dequantized first, so a layers model, its files and a graph model's constants compare
 *   alike); otherwise suspected when a surrogate loaded with its stored weights (no reinit) has
 *   weights that look trained: some one-axis weight (bias, normalisation parameter) is not at a
 *   constant initial value, as freshly built Keras/TF.js models have (zero biases).
 * - Its directions carry no information: its softmax is (nearly) the same for every input, or
 *   one-hot on every input (then p − e_k depends on the top class alone). Found by running it on a
 *   few probe inputs: the caller's (real requests are best) or four seeded random rows of
 *   different ranges (two in [0, 1), one in [−1, 1), one in [0, 255)).
 *
 * checkSurrogate returns the warnings; loadSurrogate({ ..., check }) logs them (the CLI does this
 * for every surrogate it loads).
 */
import { createHash } from 'node:crypto';
import { ModelInputError } from '../errors.js';
import { modelPathKind, readModelDir, specBytes } from '../tfjs/model-dir.js';
import { readOrExplain } from '../tfjs/io.js';
import { ONNX_FIELDS as F, ONNX_FLOAT, fieldString, readFields, repeatedInts, type ProtoField } from '../onnx/proto.js';
import { seededRandom } from '../random.js';
import type { SurrogateModel } from '../surrogate-model.js';
import { tf, type LayersModel } from '../tfjs/tf.js';

export type SurrogateWarningCode = 'victim-weights' | 'stored-weights' | 'constant' | 'one-hot' | 'probe-failed';

export interface SurrogateWarning {
  readonly code: SurrogateWarningCode;
  readonly message: string;
}

/** The served model, as far as it is known: its files (a TF.js model's JSON or directory, an ONNX file), ONNX bytes, or the model object. */
export type VictimSource = string | Uint8Array | LayersModel | tf.GraphModel;

export interface CheckSurrogateOptions {
  /**
   * Preprocessed input rows to probe with (rows × prod(inputShape), row-major), e.g. a few real
   * requests; default four seeded random rows (two in [0, 1), one in [−1, 1), one in [0, 255)).
   * false skips the probes.
   */
  probes?: Float32Array | false;
  /** The served model: when given, the surrogate's weights are compared with its weights. */
  victim?: VictimSource;
}

/** Where a surrogate came from (recorded by loadSurrogate): what the weight checks read. */
export interface SurrogateOrigin {
  /** A TF.js model (JSON file, directory, bundle) or ONNX file. */
  readonly path?: string;
  /** ONNX bytes or file. */
  readonly onnx?: string | Uint8Array;
  /** The model object it was built from. */
  readonly model?: LayersModel | tf.GraphModel;
  /** The seed it was re-initialised from: its weights are fresh. */
  readonly reinit?: number;
}

const origins = new WeakMap<object, SurrogateOrigin>();

/** @internal loadSurrogate records each surrogate's origin here. */
export function recordSurrogateOrigin(surrogate: SurrogateModel, origin: SurrogateOrigin): void {
  origins.set(surrogate, origin);
}

/** Where loadSurrogate loaded `surrogate` from (undefined for a surrogate built otherwise). */
export function surrogateOrigin(surrogate: SurrogateModel): SurrogateOrigin | undefined {
  return origins.get(surrogate);
}

/** Largest L1 distance between probe rows below which the surrogate's softmax counts as constant. */
export const CONSTANT_L1 = 1e-3;
/** Top probability from which a row counts as one-hot. */
export const ONE_HOT_TOP = 0.999;
/** Share of the surrogate's weights (by count of values) found in the victim from which it counts as sharing them. */
const SHARED_SHARE = 0.5;
const DEFAULT_PROBE_ROWS = 4;

const REINIT_HINT = 'load it re-initialised instead (--reinit SEED, or reinit: seed): the same architecture with fresh weights, the MAD paper’s surrogate';
const SAME_FALLBACK =
  'MAD’s surrogate then agrees with every answer (p = y), its gradient geometry is degenerate and mad-argmax answers every input with the same fallback (the mass spread evenly over the other classes)';

/** One float weight tensor, summarised: its size, rank and (unless all its values are equal) a hash of its values. */
interface WeightDigest {
  readonly name: string;
  readonly size: number;
  readonly rank: number;
  /** Undefined when every value is the same (zeros, ones: such tensors match between unrelated models). */
  readonly hash?: string;
}

function digest(name: string, shape: readonly number[], values: Float32Array): WeightDigest {
  let varied = false;
  for (let i = 1; i < values.length && !varied; i++) varied = values[i] !== values[0];
  const hash = varied
    ? createHash('sha256')
        .update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
        .digest('hex')
    : undefined;
  return { name, size: values.length, rank: shape.length, hash };
}

function isModel(value: unknown): value is LayersModel | tf.GraphModel {
  return value instanceof tf.GraphModel || value instanceof tf.LayersModel;
}

/** Digests of a model object's float weights, read from memory. */
function digestsOfModel(model: LayersModel | tf.GraphModel): WeightDigest[] {
  if (model instanceof tf.GraphModel) {
    return Object.entries(model.weights).flatMap(([name, tensors]) => {
      const t = tensors[0];
      return t && t.dtype === 'float32' ? [digest(name, t.shape, t.dataSync() as Float32Array)] : [];
    });
  }
  return model.weights
    .filter((w) => w.dtype === 'float32')
    .map((w) => {
      const t = w.read();
      return digest(w.originalName, t.shape, t.dataSync() as Float32Array);
    });
}

/** Digests of the float weights in TF.js artifacts (quantized ones dequantized as tfjs does when loading). */
function digestsOfArtifacts(artifacts: tf.io.ModelArtifacts, file: string): WeightDigest[] {
  const bytes = new Uint8Array(artifacts.weightData === undefined ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData));
  const out: WeightDigest[] = [];
  let offset = 0;
  for (const spec of artifacts.weightSpecs ?? []) {
    const size = specBytes(spec, file);
    if (spec.dtype === 'float32') {
      const slice = bytes.slice(offset, offset + size);
      if (spec.quantization) {
        const decoded = tf.io.decodeWeights(slice.buffer, [spec]);
        try {
          out.push(digest(spec.name, spec.shape, decoded[spec.name].dataSync() as Float32Array));
        } finally {
          tf.dispose(Object.values(decoded));
        }
      } else out.push(digest(spec.name, spec.shape, new Float32Array(slice.buffer)));
    }
    offset += size;
  }
  return out;
}

/** Digests of an ONNX model's float initializers (raw_data or packed float_data). */
function digestsOfOnnx(bytes: Uint8Array): WeightDigest[] {
  const graph = readFields(bytes).find((f) => f.field === F.model.graph && f.wireType === 2);
  if (!graph?.payload) return [];
  const out: WeightDigest[] = [];
  for (const init of readFields(graph.payload).filter((f) => f.field === F.graph.initializer && f.payload)) {
    const fields = readFields(init.payload as Uint8Array);
    const type = fields.find((f) => f.field === F.tensor.dataType);
    if (Number(type?.varint ?? 0n) !== ONNX_FLOAT) continue;
    const name = fields.find((f) => f.field === F.tensor.name);
    const dims = repeatedInts(fields, F.tensor.dims).map(Number);
    const raw = fields.find((f: ProtoField) => (f.field === F.tensor.rawData || f.field === F.tensor.floatData) && f.wireType === 2 && f.payload);
    if (!raw?.payload || raw.payload.byteLength % 4 !== 0) continue;
    out.push(digest(name ? fieldString(name) : '', dims, new Float32Array(raw.payload.slice().buffer)));
  }
  return out;
}

async function digestsOfPath(path: string): Promise<WeightDigest[]> {
  if ((await modelPathKind(path)) === 'onnx') return digestsOfOnnx(await readOrExplain(path));
  const read = await readModelDir(path);
  return digestsOfArtifacts(read.artifacts, read.file);
}

function digestsOfVictim(victim: VictimSource): Promise<WeightDigest[]> | WeightDigest[] {
  if (typeof victim === 'string') return digestsOfPath(victim);
  if (victim instanceof Uint8Array) return digestsOfOnnx(victim);
  if (isModel(victim)) return digestsOfModel(victim);
  throw new ModelInputError('victim must be a model path (a TF.js model’s JSON file or directory, an ONNX file), ONNX bytes, or a LayersModel/GraphModel');
}

/** The surrogate's stored weights, or undefined when they are fresh (reinit) or cannot be read. */
async function surrogateDigests(surrogate: SurrogateModel): Promise<WeightDigest[] | undefined> {
  const origin = origins.get(surrogate);
  if (origin?.reinit !== undefined) return undefined;
  const own = (surrogate as { model?: unknown }).model;
  try {
    if (isModel(own)) return digestsOfModel(own);
    if (origin?.model) return digestsOfModel(origin.model);
    if (origin?.path !== undefined) return await digestsOfPath(origin.path);
    if (origin?.onnx !== undefined) return typeof origin.onnx === 'string' ? await digestsOfPath(origin.onnx) : digestsOfOnnx(origin.onnx);
  } catch {
    // A model disposed since, a file moved: the weight checks cannot run, the probes still can.
  }
  return undefined;
}

function victimLabel(victim: VictimSource): string {
  return typeof victim === 'string' ? victim : victim instanceof Uint8Array ? 'the victim’s ONNX bytes' : 'the victim model';
}

/** The seeded default probes: two rows in [0, 1), one in [−1, 1), one in [0, 255). */
export function defaultProbes(width: number): Float32Array {
  const random = seededRandom(0x5eed);
  const ranges: [number, number][] = [
    [0, 1],
    [0, 1],
    [-1, 1],
    [0, 255],
  ];
  const out = new Float32Array(DEFAULT_PROBE_ROWS * width);
  for (let r = 0; r < DEFAULT_PROBE_ROWS; r++) {
    const [lo, hi] = ranges[r];
    for (let i = 0; i < width; i++) out[r * width + i] = lo + random() * (hi - lo);
  }
  return out;
}

/** What the probe outputs say: constant or one-hot softmax. */
function probeWarnings(probs: { rows: number; cols: number; data: Float32Array }, given: boolean): SurrogateWarning[] {
  const { rows, cols, data } = probs;
  if (rows === 0 || cols < 2) return [];
  const what = given ? `the ${rows} probe inputs given` : `${rows} random probe inputs`;
  let spread = 0;
  for (let r = 1; r < rows; r++) {
    let l1 = 0;
    for (let k = 0; k < cols; k++) l1 += Math.abs(data[r * cols + k] - data[k]);
    spread = Math.max(spread, l1);
  }
  let minTop = 1;
  const tops = new Set<number>();
  for (let r = 0; r < rows; r++) {
    let top = 0;
    for (let k = 1; k < cols; k++) if (data[r * cols + k] > data[r * cols + top]) top = k;
    tops.add(top);
    minTop = Math.min(minTop, data[r * cols + top]);
  }
  if (rows > 1 && spread < CONSTANT_L1) {
    return [
      {
        code: 'constant',
        message: `the surrogate answers the same probabilities for all ${what} (largest L1 difference ${spread.toExponential(1)}): its gradient directions carry no information about the input, so MAD moves every answer the same way. Check the surrogate’s input scaling (--input-scale, --image-* settings) against the model, or use another surrogate (e.g. the victim’s architecture re-initialised: --reinit SEED)`,
      },
    ];
  }
  if (minTop >= ONE_HOT_TOP) {
    return [
      {
        code: 'one-hot',
        message: `the surrogate’s probabilities are one-hot on all ${what} (top class ≥ ${ONE_HOT_TOP}${tops.size === 1 ? ', always the same class' : ''}): its last-layer directions p − e_k depend on the top class alone, so MAD’s target is the same for every input with that top class. Use a surrogate with softer outputs (e.g. re-initialised: --reinit SEED), or check its output setting (logits taken for probabilities?)`,
      },
    ];
  }
  return [];
}

/**
 * The reasons `surrogate` cannot steer MAD, as warnings (empty when none is found); see the file
 * comment. Throws ModelInputError for probes of the wrong width and ModelFileError for a victim
 * path that cannot be read; a surrogate failing on the probes is a 'probe-failed' warning.
 */
export async function checkSurrogate(surrogate: SurrogateModel, options: CheckSurrogateOptions = {}): Promise<SurrogateWarning[]> {
  const warnings: SurrogateWarning[] = [];
  const own = await surrogateDigests(surrogate);
  if (own && options.victim !== undefined) {
    const victim = await digestsOfVictim(options.victim);
    const victimHashes = new Set(victim.flatMap((d) => (d.hash ? [d.hash] : [])));
    const counted = own.filter((d) => d.hash);
    const total = counted.reduce((sum, d) => sum + d.size, 0);
    const shared = counted.filter((d) => victimHashes.has(d.hash as string)).reduce((sum, d) => sum + d.size, 0);
    if (total > 0 && shared === total) {
      warnings.push({
        code: 'victim-weights',
        message: `the surrogate is the served model itself: every one of its weight tensors is ${victimLabel(options.victim)}’s. ${SAME_FALLBACK}. ${REINIT_HINT[0].toUpperCase()}${REINIT_HINT.slice(1)}`,
      });
    } else if (total > 0 && shared / total >= SHARED_SHARE) {
      warnings.push({
        code: 'victim-weights',
        message: `${((100 * shared) / total).toFixed(0)}% of the surrogate’s weights are ${victimLabel(options.victim)}’s trained weights: MAD’s directions then largely follow the victim’s own gradients; ${REINIT_HINT}`,
      });
    }
  } else if (own && options.victim === undefined && own.some((d) => d.hash && d.rank === 1)) {
    warnings.push({
      code: 'stored-weights',
      message: `the surrogate keeps the trained-looking weights stored with it (no reinit). If it is the served model (the same files as the victim), ${SAME_FALLBACK}: ${REINIT_HINT}. (A surrogate you trained yourself is fine: then ignore this.)`,
    });
  }
  if (options.probes !== false) {
    const width = surrogate.inputShape.reduce((a, b) => a * b, 1);
    const given = options.probes !== undefined;
    const x = options.probes ?? defaultProbes(width);
    if (width === 0 || x.length % width !== 0 || x.length === 0)
      throw new ModelInputError(
        `probes hold ${x.length} values, not a whole number of rows of ${width} (the surrogate’s input shape ${JSON.stringify(surrogate.inputShape)})`,
      );
    try {
      warnings.push(...probeWarnings(await surrogate.probsAsync(x, x.length / width), given));
    } catch (error) {
      warnings.push({
        code: 'probe-failed',
        message: `the surrogate failed on probe inputs (${error instanceof Error ? error.message : String(error)}); it may fail on requests too`,
      });
    }
  }
  return warnings;
}

/** The line a warning is logged as. */
export function surrogateWarningLine(warning: SurrogateWarning): string {
  return `warning: surrogate (${warning.code}): ${warning.message}`;
}
