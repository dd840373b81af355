/** The package ships the proxy config file's JSON Schema where the docs and the example config say it is. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { PROXY_CONFIG_SCHEMA_PATH } from '../../src/cli/config/proxy-config-schema.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

describe('package files', () => {
  it(`include ${PROXY_CONFIG_SCHEMA_PATH}`, async () => {
    const { stdout } = await run('npm', ['pack', '--dry-run', '--ignore-scripts', '--json'], { cwd: root, maxBuffer: 16 * 1024 * 1024 });
    const [pack] = JSON.parse(stdout) as { files: { path: string }[] }[];
    const paths = pack.files.map((f) => f.path);
    assert.ok(paths.includes(PROXY_CONFIG_SCHEMA_PATH), paths.join(', '));
  });
});
