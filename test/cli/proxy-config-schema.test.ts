/**
 * The proxy config file's JSON Schema: generated from the same zod schema `msd proxy` checks the file
 * with, committed and shipped; this fails while the committed copy is stale.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { PROXY_CONFIG_SCHEMA_PATH, proxyConfigJsonSchema, proxyConfigJsonSchemaText } from '../../src/cli/config/proxy-config-schema.js';
import { PROXY_FIELDS, readProxyConfigFile, resolveProxySettings } from '../../src/cli/config/proxy-config.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

describe('proxy config file: JSON Schema', () => {
  it('is the committed file (regenerate with `node --import tsx scripts/config-schema.ts --write`)', async () => {
    assert.equal(await readFile(join(root, PROXY_CONFIG_SCHEMA_PATH), 'utf8'), proxyConfigJsonSchemaText());
  });

  it('lists every setting the file takes, with its help, and none it refuses', () => {
    const schema = proxyConfigJsonSchema() as { properties: Record<string, { description?: string }>; additionalProperties: unknown };
    const inFile = PROXY_FIELDS.filter((f) => !f.notInFile && !f.fileKey).map((f) => f.key);
    assert.deepEqual(Object.keys(schema.properties), [...inFile, '$schema']);
    assert.equal(schema.additionalProperties, false);
    assert.match(schema.properties.timeoutMs.description ?? '', /upstream timeout/);
    for (const refused of ['secret', 'shadowSample', 'shadowEvery']) assert.equal(schema.properties[refused], undefined, refused);
    const shadow = schema.properties.shadow as { properties?: Record<string, unknown> };
    assert.ok(shadow.properties?.heldOut && shadow.properties.every && shadow.properties.sample, JSON.stringify(shadow));
  });

  it('is named by the example config, which the proxy reads', async () => {
    const file = join(root, 'examples', 'proxy.yaml');
    const text = await readFile(file, 'utf8');
    assert.match(text, /^# yaml-language-server: \$schema=\.\.\/schema\/proxy-config\.schema\.json$/m);
    const settings = resolveProxySettings({}, { name: 'proxy.yaml', values: await readProxyConfigFile(file) }, {});
    assert.equal(settings.upstream, 'http://127.0.0.1:8080');
  });
});
