/**
 * The package's entries: each loads only what it must (checked in a fresh process), and the names
 * each exports match the committed API report (api-report.md), so a change of the public API shows
 * as a diff of that file.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

/** Imports `entry` in a fresh process (optionally runs `then` with it) and reports which of TF.js and Express were loaded. */
async function loads(entry: string, then = ''): Promise<{ tfjs: boolean; express: boolean }> {
  const script = `
    import { createRequire } from 'node:module';
    const api = await import(${JSON.stringify(new URL(entry, `file://${root}/`).href)});
    ${then}
    const files = Object.keys(createRequire(import.meta.url).cache);
    process.stdout.write(JSON.stringify({ tfjs: files.some((f) => f.includes('/@tensorflow/')), express: files.some((f) => /\\/express\\//.test(f)) }));
  `;
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, timeout: 60_000 });
  return JSON.parse(stdout);
}

describe('package entries', { timeout: 180_000 }, () => {
  it('./defenses and ./detection load neither TensorFlow.js nor Express', async () => {
    assert.deepEqual(await loads('src/entries/defenses.ts'), { tfjs: false, express: false });
    assert.deepEqual(await loads('src/entries/detection.ts'), { tfjs: false, express: false });
  });

  it('./server loads no TensorFlow.js, even with a rounding proxy answering a request', async () => {
    const then = `
      const upstream = (await import('node:http')).createServer((req, res) => {
        req.resume();
        req.on('end', () => res.end(JSON.stringify({ model_name: 'm', outputs: [{ name: 'p', shape: [1, 3], datatype: 'FP32', data: [0.123, 0.2345, 0.6425] }] })));
      });
      await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
      const proxy = await api.startDefenseProxy({ upstream: 'http://127.0.0.1:' + upstream.address().port, defense: 'rounding:decimals=1' });
      const answer = await fetch(proxy.url + '/v2/models/m/infer', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: [{ name: 'x', shape: [1, 1], datatype: 'FP32', data: [0] }] }) });
      if ((await answer.json()).outputs[0].data[0] !== 0.1) throw new Error('the proxy did not round');
      await proxy.close();
      upstream.close();
    `;
    assert.equal((await loads('src/entries/server.ts', then)).tfjs, false);
  });

  it('./models and the root load TensorFlow.js (the control: the check can see it)', async () => {
    assert.equal((await loads('src/entries/models.ts')).tfjs, true);
    assert.equal((await loads('src/index.ts')).tfjs, true);
  });

  it('every entry exports what api-report.md lists (regenerate with `node scripts/api-report.mjs --write`)', async () => {
    const { stdout } = await run(process.execPath, ['scripts/api-report.mjs'], { cwd: root, timeout: 120_000 });
    assert.equal(stdout, await readFile(`${root}/api-report.md`, 'utf8'));
  });
});
