#!/usr/bin/env node
// The proxy config file's JSON Schema, generated from its zod schema (src/cli/config/proxy-config.ts).
// `node --import tsx scripts/config-schema.ts` prints it; `--write` updates schema/proxy-config.schema.json,
// which is committed and shipped (a test compares the two).
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROXY_CONFIG_SCHEMA_PATH, proxyConfigJsonSchemaText } from '../src/cli/config/proxy-config-schema.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const text = proxyConfigJsonSchemaText();
if (process.argv.includes('--write')) {
  writeFileSync(join(root, PROXY_CONFIG_SCHEMA_PATH), text);
  process.stdout.write(`wrote ${PROXY_CONFIG_SCHEMA_PATH}\n`);
} else {
  process.stdout.write(text);
}
