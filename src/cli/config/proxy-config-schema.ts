/**
 * The JSON Schema of the proxy's config file, generated from its zod schema (PROXY_CONFIG_SCHEMA), so
 * the file editors read cannot drift from the checks `msd proxy` runs. It is committed and shipped as
 * schema/proxy-config.schema.json; `node --import tsx scripts/config-schema.ts --write` regenerates it
 * and a test fails while the committed copy is stale.
 */
import { z } from 'zod';
import { PROXY_CONFIG_SCHEMA } from './proxy-config.js';

/** Where the JSON Schema lives in the repository and in the package. */
export const PROXY_CONFIG_SCHEMA_PATH = 'schema/proxy-config.schema.json';

/** The JSON Schema (draft-07, which YAML and JSON editors read) of what a config file may hold. */
export function proxyConfigJsonSchema(): Record<string, unknown> {
  // "input": the values as written in the file (a duration as text), not as parsed.
  const generated = z.toJSONSchema(PROXY_CONFIG_SCHEMA, { target: 'draft-7', io: 'input' }) as Record<string, unknown>;
  const { $schema, ...rest } = generated;
  return {
    $schema,
    title: 'msd proxy config file',
    description:
      'Settings of `msd proxy --config FILE` (YAML or JSON), by their camelCase names; flags given on the command line override them. Secrets are not read from it (MSD_NOISE_SECRET).',
    ...rest,
  };
}

/** The file's text: two-space JSON and a final newline. */
export const proxyConfigJsonSchemaText = (): string => `${JSON.stringify(proxyConfigJsonSchema(), null, 2)}\n`;
