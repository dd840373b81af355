/**
 * Options of the serving layer, checked once when a middleware or a proxy is built. A bad option
 * throws ServingOptionError with what to write instead.
 */
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { DefenseError, parseDefense, type Defense, type DefenseConfig, type InputFormat } from '../defenses/index.js';
import { z } from 'zod';
import { callable, joinPath, keysOf, oneOf, optionStyle, parseOptions, secretText } from '../validation/index.js';
import { ServingError, ServingOptionError } from './errors.js';
import { createServingMetrics, type ServingMetrics } from './metrics.js';
import type { ContextProvider, FailureMode } from './perturber.js';
import { createInputReader, resolveInputOptions, type InputOptions, type InputReader } from './inputs/index.js';
import { isEncodedImages, resolveCodec, type Codec, type InputRows, type ProtocolConfig, type ProtocolName } from './protocols/index.js';
import { createClientGate, type ClientGate } from './clients/gate.js';
import type { ClientsOptions } from './clients/options.js';
import { lacksGram } from './provider-capabilities.js';
import { createShadowAttacker, resolveShadowOptions, type ShadowAttacker, type ShadowOptions } from './shadow/index.js';

/** A spec string ("mad:eps=0.5,oracle=argmax"), a config object or array, or a ready Defense. */
export type DefenseOption = DefenseConfig | Defense;

export interface ServingOptions<Req = unknown> {
  /** The defense applied to every answer unless chooseDefense says otherwise. */
  defense: DefenseOption;
  /** Wire format: "kserve-v2" (default), "tf-serving", "json-path" with its paths, or a custom codec. */
  protocol?: ProtocolName | ProtocolConfig | Codec;
  /** What the model answers (applies to spec strings and configs). Default "probs". */
  inputFormat?: InputFormat;
  /** Secret keying deterministic noise (applies to spec strings and configs). */
  noiseSecret?: string;
  /** Computes what surrogate-based defenses need from the request's inputs (see surrogateContext). */
  context?: ContextProvider;
  /** Other defenses by name (e.g. per API-key tier), built and checked now. */
  tiers?: Readonly<Record<string, DefenseOption>>;
  /**
   * Per request: a tier name, null to skip the defense (the original answer goes out), or
   * undefined for the default defense. An unknown tier name fails closed (500).
   */
  chooseDefense?: (req: Req) => string | null | undefined;
  /** On a failure after the answer was read: "error" (default) or "argmax" (the top-1 label only). */
  onFailure?: FailureMode;
  /** prom-client registry (default: a new one per instance). */
  registry?: Registry;
  /** Metric name prefix, default "msd_". */
  metricsPrefix?: string;
  /** pino logger; the middleware writes one line per defended answer when given. */
  logger?: Logger;
  /**
   * How request inputs reach the surrogate: base64 images decoded and preprocessed as declared in
   * `image` (size, resize, channels, layout, scale, mean/std), limits on images, a scale for numeric tensors.
   */
  inputs?: InputOptions;
  /** Per-client extraction detection: identity, detectors and policy, state store, fail mode (see src/server/clients). */
  clients?: ClientsOptions<Req>;
  /**
   * The shadow attacker (off by default): samples a share of the answered requests and, in a worker
   * thread within a CPU budget, trains knockoffs on the defended and on the original answers, scored
   * on the owner's labelled held-out data; its gauges show what an attacker learns from what is served
   * (see docs/shadow.md).
   */
  shadow?: ShadowOptions;
}

export interface ResolvedServing<Req> {
  codec: Codec;
  defense: Defense;
  tiers: ReadonlyMap<string, Defense>;
  chooseDefense?: (req: Req) => string | null | undefined;
  onFailure: FailureMode;
  inputFormat: InputFormat;
  context?: ContextProvider;
  metrics: ServingMetrics;
  logger?: Logger;
  /**
   * The request's inputs as the surrogate takes them: the codec finds them, the inputs stage decodes
   * and preprocesses. `beforeDecode` is called with the number of encoded images before any is read
   * (the proxy asks the surrogate's queue then, 503 before the decoding work).
   */
  readInputs: (body: unknown, beforeDecode?: (rows: number) => void) => InputRows | Promise<InputRows>;
  clients?: ClientGate;
  /** With clients: the admin route's token and path, when enabled. */
  clientsAdmin?: { token: string; path?: string; limit?: number };
  /** With shadow: the shadow attacker (the serving layer offers it answers once they are sent). */
  shadow?: ShadowAttacker;
}

/** The shape of ServingOptions; defenses, codecs, inputs, clients and shadow are checked by their own builders, which name them. */
const servingSchema = z.strictObject(
  {
    defense: z.unknown().optional(),
    protocol: z.unknown().optional(),
    inputFormat: oneOf(['probs', 'logits'], '"probs" or "logits"').optional(),
    noiseSecret: secretText(1, 'a non-empty string (the key of deterministic noise)').optional(),
    context: callable<ContextProvider>('a function (needs, inputs) => DefenseContext, e.g. surrogateContext({ surrogate })').optional(),
    tiers: z.record(z.string(), z.unknown(), { error: 'an object of tier name → defense, e.g. { argmax: "argmax" }' }).optional(),
    chooseDefense: callable<NonNullable<ServingOptions['chooseDefense']>>('a function (req) => tier name | null | undefined').optional(),
    onFailure: oneOf(['error', 'argmax'], '"error" or "argmax"').optional(),
    registry: z.unknown().optional(),
    metricsPrefix: z.string({ error: 'a string such as "msd_"' }).optional(),
    logger: z.unknown().optional(),
    inputs: z.unknown().optional(),
    clients: z.unknown().optional(),
    shadow: z.unknown().optional(),
  } satisfies Record<keyof ServingOptions, z.ZodType>,
  { error: 'an object, e.g. { defense: "mad:eps=0.5,oracle=argmax", context: surrogateContext({ surrogate }) }' },
);

/** Every option ServingOptions takes, read from its schema (the proxy adds its own). */
export const SERVING_OPTION_NAMES: readonly string[] = keysOf(servingSchema);

const style = optionStyle(ServingOptionError, '', { name: (path) => (path.length ? joinPath('', path) : 'options') });

export function isDefense(value: unknown): value is Defense {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    typeof (value as Defense).apply === 'function' &&
    Array.isArray((value as Defense).needs)
  );
}

function buildDefense(option: DefenseOption | undefined, where: string, inputFormat: InputFormat, noiseSecret: string | undefined): Defense {
  if (option === undefined) throw new ServingOptionError(`${where} is required, e.g. defense: "mad:eps=0.5,oracle=argmax" or "rounding:decimals=2"`);
  if (isDefense(option)) return option;
  try {
    return parseDefense(option, { inputFormat, noiseSecret });
  } catch (error) {
    if (error instanceof DefenseError) throw new ServingOptionError(`${where}: ${error.message}`);
    throw error;
  }
}

export function resolveServingOptions<Req>(options: ServingOptions<Req>): ResolvedServing<Req> {
  parseOptions(servingSchema, options, style);
  const inputFormat = options.inputFormat ?? 'probs';
  if (options.inputFormat !== undefined && isDefense(options.defense)) {
    throw new ServingOptionError('inputFormat applies to spec strings; for a ready Defense build it with parseDefense(spec, { inputFormat }) instead');
  }
  const onFailure = options.onFailure ?? 'error';

  const defense = buildDefense(options.defense, 'defense', inputFormat, options.noiseSecret);
  const tiers = new Map<string, Defense>();
  for (const [name, spec] of Object.entries(options.tiers ?? {})) tiers.set(name, buildDefense(spec, `tiers.${name}`, inputFormat, options.noiseSecret));
  for (const [where, candidate] of [['defense', defense] as const, ...[...tiers].map(([name, d]) => [`tiers.${name}`, d] as const)]) {
    if (candidate.needs.length > 0 && !options.context) {
      throw new ServingOptionError(
        `${where} (${candidate.spec}) needs ${candidate.needs.join(', ')}; pass context: surrogateContext({ surrogate: await Surrogate.load(dir) }), or choose a defense without a surrogate such as "rounding:decimals=2"`,
      );
    }
    const noGram = candidate.needs.includes('surrogateGram') ? lacksGram(options.context) : undefined;
    if (noGram) throw new ServingOptionError(`${where} (${candidate.spec}): ${noGram}`);
  }
  const codec = resolveCodec(options.protocol);
  // Images over the context's row limit are refused (413) before any is read.
  const inputOptions = resolveInputOptions(options.inputs);
  const reader: InputReader = createInputReader(inputOptions, { maxRows: options.context?.maxRowsPerRequest });
  const readInputs = (body: unknown, beforeDecode?: (rows: number) => void) => {
    const found = codec.readInputs(body);
    if (beforeDecode && isEncodedImages(found)) beforeDecode(found.rows);
    return reader(found);
  };
  const metrics = createServingMetrics({ registry: options.registry, prefix: options.metricsPrefix });
  options.context?.useMetrics?.(metrics);
  const shadowOptions = options.shadow === undefined ? undefined : resolveShadowOptions(options.shadow);
  const clients = options.clients ? createClientGate(options.clients as ClientsOptions<never>, { defense, tiers, metrics, logger: options.logger }) : undefined;
  const shadow = shadowOptions
    ? createShadowAttacker(shadowOptions, {
        metrics,
        logger: options.logger,
        tiers: [...tiers.keys()],
        defenses: new Map([['default', defense], ...tiers]),
        context: options.context,
        imageLayout: inputOptions.image?.layout,
      })
    : undefined;
  return {
    codec,
    defense,
    tiers,
    chooseDefense: options.chooseDefense,
    onFailure,
    inputFormat,
    context: options.context,
    metrics,
    logger: options.logger,
    readInputs,
    clients,
    clientsAdmin: options.clients?.admin,
    shadow,
  };
}

/** The defense for one request: the default, a tier chosen by the hook, or null to skip. An unknown tier fails closed. */
export function selectDefense<Req>(resolved: ResolvedServing<Req>, req: Req): Defense | null {
  if (!resolved.chooseDefense) return resolved.defense;
  const choice = resolved.chooseDefense(req);
  if (choice === undefined) return resolved.defense;
  if (choice === null) return null;
  const tier = resolved.tiers.get(choice);
  if (!tier)
    throw new ServingError(
      `chooseDefense returned "${choice}", which is not a configured tier (${[...resolved.tiers.keys()].join(', ') || 'none configured'})`,
      500,
      'defense_failed',
    );
  return tier;
}
