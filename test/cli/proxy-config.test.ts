import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Command } from 'commander';
import { addProxyFlags, PROXY_FIELDS, readProxyConfigFile, resolveProxySettings } from '../../src/cli/config/proxy-config.js';
import { scratchDir } from '../helpers/scratch.js';

/** The flags commander reads from an argument list, as the proxy command gets them. */
function flagsOf(args: string[]): Record<string, unknown> {
  const command = addProxyFlags(new Command('proxy').exitOverride());
  command.parse(args, { from: 'user' });
  return command.opts();
}

describe('proxy settings: config file, flags, environment', () => {
  it('reads JSON and YAML files to the same settings, with defaults for the rest', async () => {
    const dir = await scratchDir('msd-proxy-config-');
    await writeFile(
      join(dir, 'proxy.json'),
      JSON.stringify({ upstream: 'http://10.0.0.1:8080', protocol: 'tf-serving', workers: 2, passRoutes: ['GET /health'], timeoutMs: 500 }),
    );
    await writeFile(
      join(dir, 'proxy.yaml'),
      'upstream: http://10.0.0.1:8080\nprotocol: tf-serving\nworkers: 2\npassRoutes:\n  - GET /health\ntimeoutMs: 500\n',
    );
    const fromJson = resolveProxySettings({}, { name: 'proxy.json', values: await readProxyConfigFile(join(dir, 'proxy.json')) }, {});
    const fromYaml = resolveProxySettings({}, { name: 'proxy.yaml', values: await readProxyConfigFile(join(dir, 'proxy.yaml')) }, {});
    assert.deepEqual(fromYaml, fromJson);
    assert.equal(fromJson.workers, 2);
    assert.deepEqual(fromJson.passRoutes, ['GET /health']);
    assert.equal(fromJson.defense, 'rounding:decimals=3');
    assert.equal(fromJson.port, 8081);
  });

  it('lets flags override the file, and takes the secret from the environment', () => {
    const file = { name: 'proxy.json', values: { upstream: 'http://a:1', port: 9000, defense: 'argmax', inferRoutes: ['POST /a'] } };
    const settings = resolveProxySettings(flagsOf(['--port', '9100', '--infer-route', 'POST /b', '--infer-route', 'POST /c']), file, {
      MSD_NOISE_SECRET: 's3cret',
    });
    assert.equal(settings.port, 9100);
    assert.equal(settings.defense, 'argmax');
    assert.deepEqual(settings.inferRoutes, ['POST /b', 'POST /c']);
    assert.equal(settings.secret, 's3cret');
    assert.equal(resolveProxySettings(flagsOf(['--secret', 'flag']), file, { MSD_NOISE_SECRET: 'env' }).secret, 'flag');
  });

  it('names the field in every error', async () => {
    const file = (values: Record<string, unknown>) => ({ name: 'proxy.json', values: { upstream: 'http://a:1', ...values } });
    assert.throws(() => resolveProxySettings({}, file({ workers: 0 }), {}), /config file proxy\.json: "workers" must be an integer ≥ 1, got 0/);
    assert.throws(() => resolveProxySettings({}, file({ timeoutMs: '10s' }), {}), /"timeoutMs" must be an integer ≥ 1, got "10s"/);
    assert.throws(() => resolveProxySettings({}, file({ protocol: 'grpc' }), {}), /"protocol" must be one of kserve-v2, tf-serving, json-path/);
    assert.throws(() => resolveProxySettings({}, file({ passRoutes: 'GET /x' }), {}), /"passRoutes" must be a list of strings/);
    assert.throws(() => resolveProxySettings({}, file({ upstrem: 'x' }), {}), /unknown field "upstrem"; allowed: upstream,/);
    assert.throws(
      () => resolveProxySettings({}, file({ secret: 'x' }), {}),
      /"secret" is a secret and is not read from files; set MSD_NOISE_SECRET in the environment/,
    );
    assert.throws(() => resolveProxySettings(flagsOf(['--port', 'eighty']), file({}), {}), /--port must be an integer ≥ 0, got "eighty"/);
    assert.throws(() => resolveProxySettings({}, undefined, {}), /upstream is required: pass --upstream URL, or set "upstream" in the config file/);
    const dir = await scratchDir('msd-proxy-config-');
    await writeFile(join(dir, 'bad.yaml'), 'upstream: [unclosed\n');
    await assert.rejects(readProxyConfigFile(join(dir, 'bad.yaml')), /config file .*bad\.yaml: cannot parse it/);
    await writeFile(join(dir, 'list.json'), '[1]');
    await assert.rejects(readProxyConfigFile(join(dir, 'list.json')), /must hold an object of settings/);
  });

  it('gives every field a flag and a distinct config key', () => {
    const keys = PROXY_FIELDS.map((f) => f.key);
    assert.equal(new Set(keys).size, keys.length);
    const longs = PROXY_FIELDS.map((f) => /--[a-z-]+/.exec(f.flags)?.[0]);
    assert.equal(new Set(longs).size, longs.length);
  });
});
