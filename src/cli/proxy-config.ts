/**
 * The proxy's settings, one table: each field is a command-line flag, a config-file key and a
 * validator. Settings come from the config file (JSON or YAML), then flags override them, then
 * defaults fill the rest. Secrets come from the environment, never from the config file.
 * A new setting is one line in PROXY_FIELDS (and a field in ProxySettings).
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { Option, type Command } from 'commander';
import { ServingOptionError } from '../server/errors.js';
import { PROTOCOLS } from '../server/protocols/index.js';
import type { BatchingFlags } from './batching-flags.js';
import type { InputFlags } from './image-flags.js';
import { parseShadowField, SHADOW_ARCHS, SHADOW_FIELD_NAMES, type ShadowFieldName } from '../server/shadow/index.js';
import { REINIT_HELP, SURROGATE_ENGINE_HELP, SURROGATE_FROM_HELP, SURROGATE_HELP, SURROGATE_ONNX_HELP, SURROGATE_THREAD_HELP } from './surrogate-flags.js';

/** Reads one value, from a flag (a string, or true for a switch, or string[] when repeatable) or from the config file (any JSON value). */
type Validator<T> = { parse(value: unknown, name: string): T; repeatable?: boolean; switch?: boolean };

export interface ProxyField<T = unknown> {
  /** Config-file key, and the property of ProxySettings. */
  key: keyof ProxySettings & string;
  /** Commander flags, e.g. "-p, --port <n>". */
  flags: string;
  help: string;
  type: Validator<T>;
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

const fail = (name: string, expected: string, value: unknown): never => {
  throw new ServingOptionError(`${name} must be ${expected}, got ${JSON.stringify(value)}`);
};

export const text: Validator<string> = {
  parse: (value, name) => (typeof value === 'string' && value.length > 0 ? value : fail(name, 'a non-empty string', value)),
};

export const integer = (min: number): Validator<number> => ({
  parse(value, name) {
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
    return typeof n === 'number' && Number.isInteger(n) && n >= min ? n : fail(name, `an integer ≥ ${min}`, value);
  },
});

export const positiveNumber: Validator<number> = {
  parse(value, name) {
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
    return typeof n === 'number' && Number.isFinite(n) && n > 0 ? n : fail(name, 'a positive number', value);
  },
};

export const oneOf = (choices: readonly string[]): Validator<string> => ({
  parse: (value, name) => (typeof value === 'string' && choices.includes(value) ? value : fail(name, `one of ${choices.join(', ')}`, value)),
});

export const flag: Validator<boolean> = {
  switch: true,
  parse: (value, name) => (typeof value === 'boolean' ? value : fail(name, 'true or false', value)),
};

/** A value parsed later by the flag group that owns it: a string, a number, or a list of numbers (written "a,b,c"). */
export const scalar: Validator<string> = {
  parse(value, name) {
    if (typeof value === 'string' && value.trim() !== '') return value;
    if (typeof value === 'number' && Number.isFinite(value)) return String(value);
    if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'number' && Number.isFinite(v))) return value.join(',');
    return fail(name, 'a string, a number or a list of numbers', value);
  },
};

export const list: Validator<string[]> = {
  repeatable: true,
  parse: (value, name) => (Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : fail(name, 'a list of strings', value)),
};

/** Joins a setting's name and a member: `config file p.yaml: "shadow"` → `config file p.yaml: "shadow.sample"`, `--shadow` → `--shadow.sample`. */
const member = (name: string, key: string): string => (name.endsWith('"') ? `${name.slice(0, -1)}.${key}"` : `${name}.${key}`);

/** The `shadow` object (a file's value, or JSON text from --shadow): each member checked by the shadow's own parsers. */
export const shadowObject: Validator<ShadowSettings> = {
  parse(value, name) {
    let object = value;
    if (typeof value === 'string') {
      try {
        object = JSON.parse(value);
      } catch {
        return fail(name, 'a JSON object such as {"heldOut": "data/test-images-idx3-ubyte.gz", "sample": 0.1, "every": "300s"}', value);
      }
    }
    if (!object || typeof object !== 'object' || Array.isArray(object))
      return fail(name, 'an object such as { heldOut: PATH, sample: 0.1, every: "300s" }', value);
    const settings: ShadowSettings = {};
    for (const [key, given] of Object.entries(object)) {
      if (key === 'heldOut' || key === 'heldOutAnswers') settings[key] = text.parse(given, member(name, key));
      else if ((SHADOW_FIELD_NAMES as string[]).includes(key))
        settings[key as ShadowFieldName] = parseShadowField(key as ShadowFieldName, given, member(name, key));
      else throw new ServingOptionError(`${member(name, key)} is not a shadow setting; allowed: heldOut, heldOutAnswers, ${SHADOW_FIELD_NAMES.join(', ')}`);
    }
    return settings;
  },
};

/** One shadow setting given as its own flag. */
const shadowField = (key: ShadowFieldName): Validator<unknown> => ({ parse: (value, name) => parseShadowField(key, value, name) });

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

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
  { key: 'surrogateThread', flags: '--surrogate-thread', help: SURROGATE_THREAD_HELP, type: flag },
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
    type: flag,
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
  { key: 'inferRoutes', flags: '--infer-route <route>', help: 'an inference route, e.g. "POST /predict" (repeatable)', type: list, default: [] },
  { key: 'passRoutes', flags: '--pass-route <route>', help: 'a route passed through untouched, e.g. "GET /health" (repeatable)', type: list, default: [] },
  {
    key: 'passUnknownRoutes',
    flags: '--pass-unknown-routes',
    help: 'pass every unlisted route through untouched (off: unlisted routes get 404)',
    type: flag,
    default: false,
  },
  {
    key: 'onFailure',
    flags: '--on-failure <mode>',
    help: 'when the defense fails: "error" or "argmax" (label only)',
    type: oneOf(['error', 'argmax']),
    default: 'error',
  },
  { key: 'logits', flags: '--logits', help: 'the model answers logits, not probabilities', type: flag, default: false },
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
    type: shadowField('sample'),
    fileKey: 'shadow.sample',
  },
  {
    key: 'shadowEvery',
    flags: '--shadow-every <when>',
    help: 'how often the shadow trains: a time ("300s", "5m") or new sampled rows ("2000 samples"); default 300s',
    type: shadowField('every'),
    fileKey: 'shadow.every',
  },
  {
    key: 'shadowArch',
    flags: '--shadow-arch <arch>',
    help: `the shadow knockoffs’ network: ${SHADOW_ARCHS.join(', ')} (auto: an MLP for flat inputs, a small CNN for images), or a TF.js model path re-initialised each round`,
    type: shadowField('arch'),
    fileKey: 'shadow.arch',
  },
  {
    key: 'shadowCpu',
    flags: '--shadow-cpu <share>',
    help: 'share of one CPU core the shadow’s training may use on average (default 0.25)',
    type: shadowField('cpu'),
    fileKey: 'shadow.cpu',
  },
  {
    key: 'shadowMinProtection',
    flags: '--shadow-min-protection <ratio>',
    help: 'protection (the knockoff’s accuracy on original minus on defended answers) under which the MsdShadowProtectionLow alert fires, e.g. 0.05',
    type: shadowField('minProtection'),
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

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Adds every field's flag (no commander defaults: a flag left out must not hide the config file's value). */
export function addProxyFlags(command: Command): Command {
  command.option(
    '-c, --config <file>',
    'config file (JSON, or YAML for .yaml/.yml) holding any of the settings below by their camelCase names; flags override it',
  );
  for (const field of PROXY_FIELDS) {
    const option = new Option(
      field.flags,
      field.help +
        (field.default !== undefined && !(Array.isArray(field.default) && field.default.length === 0) && field.default !== false
          ? ` (default: ${JSON.stringify(field.default)})`
          : ''),
    );
    if (field.type.repeatable) option.argParser(collect);
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
    for (const [key, value] of Object.entries(file.values)) {
      const field = byKey.get(key as keyof ProxySettings);
      if (!field)
        throw new ServingOptionError(
          `config file ${file.name}: unknown field "${key}"; allowed: ${PROXY_FIELDS.filter((f) => !f.notInFile && !f.fileKey)
            .map((f) => f.key)
            .join(', ')}`,
        );
      if (field.notInFile)
        throw new ServingOptionError(
          `config file ${file.name}: "${key}" is a secret and is not read from files; set ${field.env ?? `--${key}`} in the environment instead`,
        );
      if (field.fileKey) {
        const [object, inner] = field.fileKey.split('.');
        throw new ServingOptionError(`config file ${file.name}: "${key}" is written inside the ${object} object: ${object}: { ${inner}: ... }`);
      }
      settings[key] = field.type.parse(value, `config file ${file.name}: "${key}"`);
    }
  }
  for (const field of PROXY_FIELDS) {
    const value = flags[attributeOf(field)];
    if (value !== undefined) settings[field.key] = field.type.parse(value, flagName(field));
    else if (settings[field.key] === undefined && field.env && env[field.env] !== undefined && env[field.env] !== '')
      settings[field.key] = field.type.parse(env[field.env], field.env);
    if (settings[field.key] === undefined && field.default !== undefined) settings[field.key] = field.default;
  }
  if (settings.upstream === undefined) throw new ServingOptionError('upstream is required: pass --upstream URL, or set "upstream" in the config file');
  return settings as unknown as ProxySettings;
}
