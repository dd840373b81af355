/**
 * The proxy's settings, one table: each field is a command-line flag, a config-file key and a zod
 * schema. Settings come from the config file (JSON or YAML), then flags override them, then
 * defaults fill the rest; the config file's JSON Schema is generated from the same table
 * (proxy-config-schema.ts). Secrets come from the environment, never from the config file.
 * A new setting is one line in PROXY_FIELDS (and a field in ProxySettings); then regenerate the
 * JSON Schema (`node --import tsx scripts/config-schema.ts --write`).
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { ServingOptionError } from '../../server/errors.js';
import { PROTOCOLS } from '../../server/protocols/index.js';
import { fromText, integerAtLeast, joinPath, nonEmptyText, oneOf, optionStyle, parseOptions, trueOrFalse } from '../../validation/index.js';
import type { BatchingFlags } from '../flags/batching-flags.js';
import type { InputFlags } from '../flags/image-flags.js';
import { SHADOW_ARCHS, SHADOW_FIELD_SCHEMAS, SHADOW_FIELDS, type ShadowFieldName } from '../../server/shadow/index.js';
import {
  REINIT_HELP,
  SURROGATE_ENGINE_HELP,
  SURROGATE_FROM_HELP,
  SURROGATE_HELP,
  SURROGATE_ONNX_HELP,
  SURROGATE_THREAD_HELP,
} from '../flags/surrogate-flags.js';

export interface ProxyField<T = unknown> {
  /** Config-file key, and the property of ProxySettings. */
  key: keyof ProxySettings & string;
  /** Commander flags, e.g. "-p, --port <n>". */
  flags: string;
  help: string;
  /** What a value must be; it parses a flag's text (or list, or switch) and the config file's value alike. */
  type: z.ZodType<T>;
  /** A flag given more than once collects its values. */
  repeatable?: boolean;
  default?: T;
  /** Environment variable read when neither the flags nor the file set it. */
  env?: string;
  /** Refused in the config file (a secret: pass it through `env`). */
  notInFile?: boolean;
  /** Written in the config file inside an object instead, e.g. "shadow.sample". */
  fileKey?: string;
}

/** Input (image-flags.ts) and batching (batching-flags.ts) settings are raw text, parsed where their flags are. */
export interface ProxySettings extends InputFlags, BatchingFlags {
  upstream: string;
  protocol: string;
  defense: string;
  surrogate?: string;
  surrogateFrom?: string;
  surrogateOnnx?: string;
  reinit?: string;
  surrogateThread?: boolean;
  surrogateEngine?: string;
  port: number;
  host: string;
  metricsTokenEnv?: string;
  metricsPublic: boolean;
  timeoutMs: number;
  maxBody: number;
  outputName?: string;
  inputName?: string;
  outputKey?: string;
  inputKey?: string;
  probsPath?: string;
  inputsPath?: string;
  inferRoutes: string[];
  passRoutes: string[];
  passUnknownRoutes: boolean;
  onFailure: string;
  logits: boolean;
  secret?: string;
  logLevel: string;
  upstreamHealthPath?: string;
  workers: number;
  shutdownTimeoutMs: number;
  /** The shadow attacker's settings (config file `shadow` object or --shadow JSON), before the --shadow-* flags. */
  shadow?: ShadowSettings;
  shadowSample?: number;
  shadowHeldOut?: string;
  shadowHeldOutAnswers?: string;
  shadowEvery?: unknown;
  shadowArch?: string;
  shadowCpu?: number;
  shadowMinProtection?: number;
}

/** The shadow attacker's settings as the command line has them: the held-out data as paths, the rest parsed. */
export type ShadowSettings = { heldOut?: string; heldOutAnswers?: string } & { [K in ShadowFieldName]?: unknown };

export const text = nonEmptyText();

export const integer = (min: number) => fromText(integerAtLeast(min));

/** A value parsed later by the flag group that owns it: a string, a number, or a list of numbers (written "a,b,c"). */
export const scalar = z
  .union([z.string().refine((value) => value.trim() !== ''), z.number(), z.array(z.number()).min(1)], {
    error: 'a string, a number or a list of numbers',
  })
  .transform((value) => (Array.isArray(value) ? value.join(',') : String(value)));

export const list = z.array(z.string({ error: 'a string' }), { error: 'a list of strings' });

/** The `shadow` object as the command line has it (held-out data as paths): a file's object, or JSON text from --shadow. */
export const shadowObject: z.ZodType<ShadowSettings> = z.preprocess(
  (value) => {
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value);
    } catch {
      return value;
    }
  },
  z.strictObject(
    {
      heldOut: text
        .meta({ description: 'the owner’s labelled held-out data (IDX or .npy with its labels file, or an image folder); turns the shadow on' })
        .optional(),
      heldOutAnswers: text.meta({ description: 'the model’s own answers (probabilities, .npy or IDX) on the held-out rows' }).optional(),
      ...SHADOW_FIELD_SCHEMAS,
    },
    {
      error: (issue) =>
        typeof issue.input === 'string'
          ? 'a JSON object such as {"heldOut": "data/test-images-idx3-ubyte.gz", "sample": 0.1, "every": "300s"}'
          : 'an object such as { heldOut: PATH, sample: 0.1, every: "300s" }',
    },
  ),
) as z.ZodType<ShadowSettings>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const PROXY_FIELDS: readonly ProxyField[] = [
  { key: 'upstream', flags: '-u, --upstream <url>', help: 'base URL of the model server, e.g. http://127.0.0.1:8080 (required)', type: text },
  { key: 'protocol', flags: '--protocol <name>', help: `wire protocol: ${PROTOCOLS.join(', ')}`, type: oneOf(PROTOCOLS), default: 'kserve-v2' },
  {
    key: 'defense',
    flags: '-d, --defense <spec>',
    help: 'defense spec, e.g. "mad-argmax:eps=0.8" (see: msd perturb --list)',
    type: text,
    default: 'rounding:decimals=3',
  },
  {
    key: 'surrogate',
    flags: '--surrogate <path>',
    help: `${SURROGATE_HELP}; it reads the request inputs as sent, or as --input-scale/--image-* prepare them`,
    type: text,
  },
  { key: 'surrogateFrom', flags: '--surrogate-from <path>', help: SURROGATE_FROM_HELP, type: text },
  { key: 'surrogateOnnx', flags: '--surrogate-onnx <file>', help: SURROGATE_ONNX_HELP, type: text },
  { key: 'reinit', flags: '--reinit <seed>', help: REINIT_HELP, type: scalar },
  { key: 'surrogateThread', flags: '--surrogate-thread', help: SURROGATE_THREAD_HELP, type: trueOrFalse() },
  { key: 'surrogateEngine', flags: '--surrogate-engine <tfjs|onnx>', help: SURROGATE_ENGINE_HELP, type: oneOf(['tfjs', 'onnx']) },
  {
    key: 'inputScale',
    flags: '--input-scale <factor>',
    help: 'multiply numeric request inputs by this before the surrogate sees them, e.g. 1/255 for 0..255 pixels',
    type: scalar,
  },
  {
    key: 'imageSize',
    flags: '--image-size <WxH>',
    help: 'the model takes images of this size, e.g. 224x224; base64 images in requests are decoded and preprocessed for the surrogate',
    type: scalar,
  },
  { key: 'imageResize', flags: '--image-resize <mode>', help: 'stretch (default), cover (fill and centre-crop) or contain (fit and pad black)', type: scalar },
  { key: 'imageChannels', flags: '--image-channels <order>', help: 'rgb (default), bgr or grayscale', type: scalar },
  { key: 'imageLayout', flags: '--image-layout <layout>', help: 'nhwc (default) or nchw', type: scalar },
  { key: 'imageScale', flags: '--image-scale <factor>', help: 'multiply 0..255 pixels by this first, e.g. 1/255', type: scalar },
  { key: 'imageMean', flags: '--image-mean <list>', help: 'per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406', type: scalar },
  { key: 'imageStd', flags: '--image-std <list>', help: 'per-channel std divided by after the mean, e.g. 0.229,0.224,0.225', type: scalar },
  {
    key: 'imageStrictChannels',
    flags: '--image-strict-channels',
    help: 'refuse (400) images whose colour channels differ from --image-channels instead of converting them',
    type: trueOrFalse(),
  },
  { key: 'maxPixels', flags: '--max-pixels <n>', help: 'largest image accepted, width × height from its header (400 past it)', type: scalar },
  { key: 'maxImageBytes', flags: '--max-image-bytes <n>', help: 'largest encoded image in bytes (413 past it)', type: scalar },
  { key: 'maxImageSide', flags: '--max-image-side <n>', help: 'longest image side in pixels, from its header (400 past it; default 16384)', type: scalar },
  {
    key: 'maxRequestPixels',
    flags: '--max-request-pixels <n>',
    help: 'pixel budget of one request: its images’ width × height added up, from their headers, before any is decoded (413 past it; default 100000000)',
    type: scalar,
  },
  {
    key: 'maxConcurrentDecodes',
    flags: '--max-concurrent-decodes <n>',
    help: 'images decoded at once, all requests together (default: the number of CPUs)',
    type: scalar,
  },
  {
    key: 'batchWindowMs',
    flags: '--batch-window-ms <ms>',
    help: 'milliseconds a surrogate batch waits for concurrent requests to join it (default 2)',
    type: scalar,
  },
  {
    key: 'maxBatchRows',
    flags: '--max-batch-rows <n>',
    help: 'rows per surrogate forward pass; larger requests are split and take turns (default 32)',
    type: scalar,
  },
  {
    key: 'maxQueueRows',
    flags: '--max-queue-rows <n>',
    help: 'rows waiting for the surrogate past which requests get 503 with Retry-After (default 16384)',
    type: scalar,
  },
  {
    key: 'maxRows',
    flags: '--max-rows <n>',
    help: 'rows per request for defenses that use the surrogate (413 past it, before forwarding; default 4096)',
    type: scalar,
  },
  { key: 'port', flags: '-p, --port <n>', help: 'port to listen on (0: any free port)', type: integer(0), default: 8081 },
  { key: 'host', flags: '--host <host>', help: 'address to listen on', type: text, default: '127.0.0.1' },
  {
    key: 'metricsTokenEnv',
    flags: '--metrics-token-env <VAR>',
    help: 'serve /metrics only with Authorization: Bearer <token>, the token (16+ characters) read from env VAR',
    type: text,
  },
  {
    key: 'metricsPublic',
    flags: '--metrics-public',
    help: 'serve /metrics without a token (they show how each answer was changed: only where clients cannot reach the port)',
    type: trueOrFalse(),
    default: false,
  },
  { key: 'timeoutMs', flags: '--timeout-ms <ms>', help: 'upstream timeout in milliseconds (504 past it)', type: integer(1), default: 30_000 },
  {
    key: 'maxBody',
    flags: '--max-body <bytes>',
    help: 'largest request body on an inference route (413 past it)',
    type: integer(1),
    default: 10 * 1024 * 1024,
  },
  { key: 'outputName', flags: '--output-name <name>', help: 'kserve-v2: the output holding the probabilities (others are dropped)', type: text },
  { key: 'inputName', flags: '--input-name <name>', help: 'kserve-v2: the input tensor the surrogate reads', type: text },
  { key: 'outputKey', flags: '--output-key <key>', help: 'tf-serving: the prediction key holding the probabilities', type: text },
  { key: 'inputKey', flags: '--input-key <key>', help: 'tf-serving: the instance key holding the model input', type: text },
  { key: 'probsPath', flags: '--probs-path <path>', help: 'json-path: where the probability rows are, e.g. "predictions[*].scores"', type: text },
  { key: 'inputsPath', flags: '--inputs-path <path>', help: 'json-path: where the input rows are, e.g. "instances"', type: text },
  {
    key: 'inferRoutes',
    flags: '--infer-route <route>',
    help: 'an inference route, e.g. "POST /predict" (repeatable)',
    type: list,
    repeatable: true,
    default: [],
  },
  {
    key: 'passRoutes',
    flags: '--pass-route <route>',
    help: 'a route passed through untouched, e.g. "GET /health" (repeatable)',
    type: list,
    repeatable: true,
    default: [],
  },
  {
    key: 'passUnknownRoutes',
    flags: '--pass-unknown-routes',
    help: 'pass every unlisted route through untouched (off: unlisted routes get 404)',
    type: trueOrFalse(),
    default: false,
  },
  {
    key: 'onFailure',
    flags: '--on-failure <mode>',
    help: 'when the defense fails: "error" or "argmax" (label only)',
    type: oneOf(['error', 'argmax']),
    default: 'error',
  },
  { key: 'logits', flags: '--logits', help: 'the model answers logits, not probabilities', type: trueOrFalse(), default: false },
  {
    key: 'secret',
    flags: '--secret <secret>',
    help: 'secret keying deterministic noise; prefer the environment variable MSD_NOISE_SECRET (the command line is visible to other users)',
    type: text,
    env: 'MSD_NOISE_SECRET',
    notInFile: true,
  },
  { key: 'logLevel', flags: '--log-level <level>', help: `pino log level: ${LOG_LEVELS.join(', ')}`, type: oneOf(LOG_LEVELS), default: 'info' },
  {
    key: 'upstreamHealthPath',
    flags: '--upstream-health-path <path>',
    help: 'GET this upstream path for /readyz (a 2xx is ready); default /v2/health/ready for kserve-v2, else any answer below 500 to GET /',
    type: text,
  },
  {
    key: 'workers',
    flags: '--workers <n>',
    help: 'worker processes sharing the port (node:cluster); metrics are aggregated across them',
    type: integer(1),
    default: 1,
  },
  {
    key: 'shutdownTimeoutMs',
    flags: '--shutdown-timeout-ms <ms>',
    help: 'on SIGTERM, how long in-flight requests may take to finish; new ones get 503',
    type: integer(1),
    default: 10_000,
  },
  {
    key: 'shadow',
    flags: '--shadow <json>',
    help: 'the shadow attacker’s settings as one JSON object (config file: the `shadow` object); the --shadow-* flags override its members',
    type: shadowObject,
  },
  {
    key: 'shadowHeldOut',
    flags: '--shadow-held-out <path>',
    help: 'turn the shadow attacker on: the owner’s labelled held-out data to score its knockoffs on (IDX or .npy with their labels file, or an image folder with one sub-folder per class, decoded with the --image-* preprocessing)',
    type: text,
    fileKey: 'shadow.heldOut',
  },
  {
    key: 'shadowHeldOutAnswers',
    flags: '--shadow-held-out-answers <path>',
    help: 'the model’s own answers (probabilities, .npy or IDX, rows × classes) on the held-out rows: adds agreement on the held-out set, the model’s and the defended accuracy',
    type: text,
    fileKey: 'shadow.heldOutAnswers',
  },
  {
    key: 'shadowSample',
    flags: '--shadow-sample <share>',
    help: 'share of answered requests the shadow samples (default 0.1)',
    type: SHADOW_FIELDS.sample.schema,
    fileKey: 'shadow.sample',
  },
  {
    key: 'shadowEvery',
    flags: '--shadow-every <when>',
    help: 'how often the shadow trains: a time ("300s", "5m") or new sampled rows ("2000 samples"); default 300s',
    type: SHADOW_FIELDS.every.schema,
    fileKey: 'shadow.every',
  },
  {
    key: 'shadowArch',
    flags: '--shadow-arch <arch>',
    help: `the shadow knockoffs’ network: ${SHADOW_ARCHS.join(', ')} (auto: an MLP for flat inputs, a small CNN for images), or a TF.js model path re-initialised each round`,
    type: SHADOW_FIELDS.arch.schema,
    fileKey: 'shadow.arch',
  },
  {
    key: 'shadowCpu',
    flags: '--shadow-cpu <share>',
    help: 'share of one CPU core the shadow’s training may use on average (default 0.25)',
    type: SHADOW_FIELDS.cpu.schema,
    fileKey: 'shadow.cpu',
  },
  {
    key: 'shadowMinProtection',
    flags: '--shadow-min-protection <ratio>',
    help: 'protection (the knockoff’s accuracy on original minus on defended answers) under which the MsdShadowProtectionLow alert fires, e.g. 0.05',
    type: SHADOW_FIELDS.minProtection.schema,
    fileKey: 'shadow.minProtection',
  },
];

/** The --shadow-* flags: settings key → member of the shadow object. */
export const SHADOW_FLAG_KEYS = {
  shadowHeldOut: 'heldOut',
  shadowHeldOutAnswers: 'heldOutAnswers',
  shadowSample: 'sample',
  shadowEvery: 'every',
  shadowArch: 'arch',
  shadowCpu: 'cpu',
  shadowMinProtection: 'minProtection',
} as const satisfies Partial<Record<keyof ProxySettings, keyof ShadowSettings>>;

const byKey = new Map(PROXY_FIELDS.map((f) => [f.key, f]));

/** Fields the config file holds by their own key (secrets come from the environment; shadow.* inside `shadow`). */
const FILE_FIELDS = PROXY_FIELDS.filter((f) => !f.notInFile && !f.fileKey);

/** The help line of a field, with its default when it has one worth printing. */
const helpOf = (field: ProxyField): string =>
  field.help +
  (field.default !== undefined && !(Array.isArray(field.default) && field.default.length === 0) && field.default !== false
    ? ` (default: ${JSON.stringify(field.default)})`
    : '');

/**
 * The config file, one schema: every file field with its help as its description, so that editors
 * complete and check `proxy.yaml` from the JSON Schema generated from it (scripts/config-schema.ts).
 * `$schema` may name that JSON Schema in a JSON file; it is not a setting.
 */
export const PROXY_CONFIG_SCHEMA = z.strictObject({
  ...Object.fromEntries(
    FILE_FIELDS.map((field) => [
      field.key,
      field.type.meta({ description: helpOf(field), ...(field.default !== undefined ? { default: field.default } : {}) }).optional(),
    ]),
  ),
  $schema: z.string().meta({ description: 'the JSON Schema of this file, for editors; not a setting' }).optional(),
});

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Adds every field's flag (no commander defaults: a flag left out must not hide the config file's value). */
export function addProxyFlags(command: Command): Command {
  command.option(
    '-c, --config <file>',
    'config file (JSON, or YAML for .yaml/.yml) holding any of the settings below by their camelCase names; flags override it',
  );
  for (const field of PROXY_FIELDS) {
    const option = new Option(field.flags, helpOf(field));
    if (field.repeatable) option.argParser(collect);
    command.addOption(option);
  }
  return command;
}

/** The commander attribute a field's flag lands in, e.g. "inferRoute" for --infer-route. */
const attributeOf = (field: ProxyField): string => new Option(field.flags).attributeName();

const flagName = (field: ProxyField): string => new Option(field.flags).long ?? field.key;

/** Parses a config file's text (JSON, or YAML by extension) into its settings object. */
export async function readProxyConfigFile(file: string): Promise<Record<string, unknown>> {
  let source: string;
  try {
    source = await readFile(file, 'utf8');
  } catch (error) {
    throw new ServingOptionError(`config file ${file}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    if (['.yaml', '.yml'].includes(extname(file).toLowerCase())) parsed = (await import('yaml')).parse(source);
    else parsed = JSON.parse(source);
  } catch (error) {
    throw new ServingOptionError(`config file ${file}: cannot parse it (${(error as Error).message.split('\n')[0]})`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new ServingOptionError(`config file ${file}: must hold an object of settings, e.g. {"upstream": "http://127.0.0.1:8080"}`);
  return parsed as Record<string, unknown>;
}

/** Names a config file's field as the user wrote it: `config file p.yaml: "shadow.every"`; unknown ones listed with the allowed. */
const fileStyle = (file: string) =>
  optionStyle(ServingOptionError, '', {
    name: (path) => `config file ${file}: "${joinPath('', path)}"`,
    unknownKeys: (_name, keys, allowed, path) =>
      path.length === 0
        ? `config file ${file}: unknown field "${keys[0]}"; allowed: ${allowed.filter((key) => key !== '$schema').join(', ')}`
        : `config file ${file}: "${joinPath('', [...path, keys[0]])}" is not a ${String(path[path.length - 1])} setting; allowed: ${allowed.join(', ')}`,
  });

/** Names a flag (or an environment variable) as the user wrote it: `--timeout-ms`, `--shadow.every`. */
const flagStyle = (flag: string, field: ProxyField) =>
  optionStyle(ServingOptionError, flag, {
    unknownKeys: (_name, keys, allowed, path) => `${joinPath(flag, [...path, keys[0]])} is not a ${field.key} setting; allowed: ${allowed.join(', ')}`,
  });

/**
 * Merges the config file's values, the flags and the environment, validating each value once.
 * Errors name the field as the user wrote it: `config file proxy.json: "timeoutMs" ...` or `--timeout-ms ...`.
 */
export function resolveProxySettings(
  flags: Record<string, unknown>,
  file: { name: string; values: Record<string, unknown> } | undefined,
  env: NodeJS.ProcessEnv = process.env,
): ProxySettings {
  const settings: Record<string, unknown> = {};
  if (file) {
    for (const key of Object.keys(file.values)) {
      const field = byKey.get(key as keyof ProxySettings);
      if (field?.notInFile)
        throw new ServingOptionError(
          `config file ${file.name}: "${key}" is a secret and is not read from files; set ${field.env ?? `--${key}`} in the environment instead`,
        );
      if (field?.fileKey) {
        const [object, inner] = field.fileKey.split('.');
        throw new ServingOptionError(`config file ${file.name}: "${key}" is written inside the ${object} object: ${object}: { ${inner}: ... }`);
      }
    }
    const { $schema: _editorsOnly, ...values } = parseOptions(PROXY_CONFIG_SCHEMA, file.values, fileStyle(file.name));
    for (const [key, value] of Object.entries(values)) if (value !== undefined) settings[key] = value;
  }
  for (const field of PROXY_FIELDS) {
    const value = flags[attributeOf(field)];
    if (value !== undefined) settings[field.key] = parseOptions(field.type, value, flagStyle(flagName(field), field));
    else if (settings[field.key] === undefined && field.env && env[field.env] !== undefined && env[field.env] !== '')
      settings[field.key] = parseOptions(field.type, env[field.env], flagStyle(field.env, field));
    if (settings[field.key] === undefined && field.default !== undefined) settings[field.key] = field.default;
  }
  if (settings.upstream === undefined) throw new ServingOptionError('upstream is required: pass --upstream URL, or set "upstream" in the config file');
  return settings as unknown as ProxySettings;
}

/** Where the start-up line says the metrics are, and who may read them. */
export function metricsLine(settings: Pick<ProxySettings, 'metricsTokenEnv' | 'metricsPublic'>, url: string): string {
  if (settings.metricsTokenEnv !== undefined) return `metrics at ${url}/metrics (bearer token from ${settings.metricsTokenEnv})`;
  if (settings.metricsPublic) return `metrics at ${url}/metrics (public: keep this port from clients)`;
  return 'metrics not served (--metrics-token-env VAR or --metrics-public)';
}
