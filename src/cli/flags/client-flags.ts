/**
 * Proxy flags of client detection, in one place: `addClientFlags(command)` registers them and
 * `clientOptionsFromFlags(flags, env, detection)` turns them into ServingOptions.clients (undefined
 * without --client-id). Secrets come from environment variables named by the flags, never from the
 * command line (which other users of the machine can read in the process list).
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import type { ClientDetection } from '../../detection/types.js';
import { ServingOptionError } from '../../server/errors.js';
import { fromText, oneOf, optionStyle, parseOptions, positiveInteger } from '../../validation/index.js';
import type { ClientsOptions, FingerprintServingOptions, PopulationServingOptions } from '../../server/clients/options.js';

export interface ClientFlags {
  clientId?: string;
  trustProxy?: string;
  redis?: string;
  clientFailMode?: string;
  anonymous?: string;
  adminTokenEnv?: string;
  adminPath?: string;
  idSecretEnv?: string;
  maxClients?: string;
  clientTtlS?: string;
  cohort?: string;
  /** true when given without a value (the defaults). */
  population?: string | boolean;
  fingerprints?: string | boolean;
  probationTier?: string;
}

export function addClientFlags(command: Command): Command {
  return command
    .option('--client-id <spec>', 'enable client detection; who a client is: "header:x-api-key", "jwt:sub" (verify the JWT before this proxy), or "ip"')
    .option('--trust-proxy <cidrs>', 'with --client-id ip: proxies whose X-Forwarded-For is believed, e.g. "10.0.0.0/8,192.168.1.1"')
    .option('--redis <url>', 'share client state across replicas in Redis, e.g. redis://127.0.0.1:6379 (default: in memory)')
    .option('--client-fail-mode <mode>', 'when Redis fails: "local" (serve on local state, default defense at least) or "refuse" (503)', 'local')
    .option('--anonymous <mode>', 'requests without identity: "allow" (one shared anonymous client) or "refuse" (401)', 'allow')
    .option('--admin-token-env <VAR>', 'enable the admin route (suspicious clients), its bearer token read from env VAR')
    .option('--admin-path <path>', 'path of the admin route', '/admin/clients')
    .option('--id-secret-env <VAR>', 'HMAC key for hashing client ids, read from env VAR (recommended with --client-id ip)')
    .option('--max-clients <n>', 'most clients kept in memory (LRU)', '100000')
    .option('--client-ttl-s <s>', 'forget a client this many seconds after its last request (refused ones too)', '21600')
    .option(
      '--cohort <spec>',
      'with --client-id: detect over cohorts of identities too: "ip" (the /24 or /64 of the client address; "ip/V4/V6" for other prefixes), "jwt:CLAIM" (e.g. jwt:org), "header:NAME", "prefix:N" (first N characters of the API key)',
    )
    .option(
      '--population [json|@file]',
      'with --client-id: population detection (all and young identities); options as JSON or @file.json/.yaml, e.g. \'{"ood":{"maxRate":0.1},"youngQueries":100}\'',
    )
    .option(
      '--fingerprints [json|@file]',
      'with --client-id: Blacklight-style query fingerprints shared across identities; options as JSON or @file, e.g. \'{"maxEntries":500000,"ttlMs":3600000}\'',
    )
    .option(
      '--probation-tier <name>',
      "with --cohort or --population: the tier of probation (must keep top-1 and perturb; default the ladder's first such tier, e.g. argmax)",
    );
}

/** A flag's JSON (or @file.json / @file.yaml) object; {} when the flag was given without a value. */
export function readObjectFlag(flag: string, value: string | boolean): Record<string, unknown> {
  if (value === true) return {};
  const text = String(value);
  let source = text;
  if (text.startsWith('@')) {
    try {
      source = readFileSync(text.slice(1), 'utf8');
    } catch (error) {
      throw new ServingOptionError(`${flag} ${text}: cannot read the file (${(error as Error).message})`);
    }
  }
  let parsed: unknown;
  try {
    parsed = text.startsWith('@') && !/\.json$/i.test(text) ? parseYaml(source) : JSON.parse(source);
  } catch (error) {
    throw new ServingOptionError(`${flag} must be JSON (or @file.json / @file.yaml), e.g. '{}': ${(error as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ServingOptionError(`${flag} must be an object of options, e.g. '{}'`);
  return parsed as Record<string, unknown>;
}

function positive(value: string | undefined, flag: string): number {
  return parseOptions(fromText(positiveInteger()), value, optionStyle(ServingOptionError, flag));
}

/** A secret read from the environment variable a flag names (never from the command line, which other users see). */
export function secretFrom(env: NodeJS.ProcessEnv, variable: string, flag: string): string {
  const value = env[variable];
  if (!value) throw new ServingOptionError(`${flag} ${variable}: the environment variable ${variable} is not set`);
  return value;
}

/**
 * A bearer token read from the environment variable a flag names: trimmed (a secret mounted as a
 * variable often ends in a newline, which a scraper trims from its credentials file), at least 16
 * characters, no spaces.
 */
export function tokenFrom(env: NodeJS.ProcessEnv, variable: string, flag: string): string {
  const token = secretFrom(env, variable, flag).trim();
  if (token.length < 16 || /\s/.test(token)) throw new ServingOptionError(`${flag} ${variable}: the token must have at least 16 characters and no spaces`);
  return token;
}

export function clientOptionsFromFlags(flags: ClientFlags, env: NodeJS.ProcessEnv, detection: ClientDetection | undefined): ClientsOptions | undefined {
  if (!flags.clientId) {
    const stray = (['trustProxy', 'redis', 'adminTokenEnv', 'idSecretEnv', 'cohort', 'population', 'fingerprints', 'probationTier'] as const).filter(
      (k) => flags[k] !== undefined,
    );
    if (stray.length) throw new ServingOptionError(`client detection flags (${stray.join(', ')}) need --client-id, e.g. --client-id header:x-api-key`);
    return undefined;
  }
  if (!detection) throw new ServingOptionError('--client-id needs a client detection (src/detection), which this build does not provide');
  const ttlMs = positive(flags.clientTtlS ?? '21600', '--client-ttl-s') * 1000;
  const maxClients = positive(flags.maxClients ?? '100000', '--max-clients');
  const failMode = parseOptions(
    oneOf(['local', 'refuse'], '"local" or "refuse"'),
    flags.clientFailMode ?? 'local',
    optionStyle(ServingOptionError, '--client-fail-mode'),
  );
  const anonymous = parseOptions(oneOf(['allow', 'refuse'], '"allow" or "refuse"'), flags.anonymous ?? 'allow', optionStyle(ServingOptionError, '--anonymous'));
  return {
    identity: flags.clientId,
    trustProxy: flags.trustProxy
      ? flags.trustProxy
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : undefined,
    idSecret: flags.idSecretEnv ? secretFrom(env, flags.idSecretEnv, '--id-secret-env') : undefined,
    anonymous,
    detection,
    store: flags.redis ? { redis: flags.redis, ttlMs } : { memory: { maxClients, ttlMs } },
    failMode,
    admin: flags.adminTokenEnv ? { token: secretFrom(env, flags.adminTokenEnv, '--admin-token-env'), path: flags.adminPath } : undefined,
    ...(flags.cohort !== undefined ? { cohort: flags.cohort } : {}),
    ...(flags.population !== undefined ? { population: readObjectFlag('--population', flags.population) as PopulationServingOptions } : {}),
    ...(flags.fingerprints !== undefined ? { fingerprints: readObjectFlag('--fingerprints', flags.fingerprints) as FingerprintServingOptions } : {}),
    ...(flags.probationTier !== undefined ? { probationTier: flags.probationTier } : {}),
  };
}
