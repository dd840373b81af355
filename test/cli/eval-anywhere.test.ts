/**
 * `msd eval` works from any working directory: its child processes find their loader (tsx, for the
 * TypeScript source) and code from the package, not from where the user stands.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';

const run = promisify(execFile);
const msd = fileURLToPath(new URL('../../bin/msd.js', import.meta.url));

describe('msd eval from another directory', { timeout: 600_000 }, () => {
  let dir: string | undefined;
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs a tiny grid with --jobs 2 from a temporary directory', async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-eval-cwd-'));
    const grid = {
      name: 'tiny-anywhere',
      world: 'closed',
      closedWorldPool: 200,
      defenses: ['none', 'rounding:decimals=1'],
      policies: ['random'],
      budgets: [100],
      seeds: 1,
      attackerLabels: ['soft'],
      victimTraining: { arch: 'mlp', epochs: 1, batchSize: 64 },
      knockoffTraining: { arch: 'mlp', epochs: 1, batchSize: 32 },
    };
    await writeFile(join(dir, 'grid.json'), JSON.stringify(grid));
    const { stdout, stderr } = await run(process.execPath, [msd, 'eval', '--config', 'grid.json', '--jobs', '2', '--cache-dir', 'models', '-o', 'out', '-q'], {
      cwd: dir,
      env: { ...process.env, MSD_CACHE_DIR: join(dir, 'cache') },
      timeout: 540_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    assert.doesNotMatch(stdout + stderr, /ERR_MODULE_NOT_FOUND/);
    assert.match(stdout + stderr, /over 2 processes/);
    const records = (await readFile(join(dir, 'out', 'runs.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    assert.deepEqual(records.map((r: { defense: string }) => r.defense).sort(), ['none', 'rounding']);

    // --report-only with a second seed planned: the report of the two finished runs, nothing run, marked partial.
    const report = await run(process.execPath, [msd, 'eval', '--config', 'grid.json', '--seeds', '2', '-o', 'out', '--report-only', '-q'], {
      cwd: dir,
      env: { ...process.env, MSD_CACHE_DIR: join(dir, 'cache') },
      timeout: 120_000,
    });
    assert.match(report.stdout, /report only: 2 of 4 runs finished/);
    assert.doesNotMatch(report.stderr, /train victim/, 'nothing is trained');
    assert.match(await readFile(join(dir, 'out', 'report.html'), 'utf8'), /partial: 2 of 4 runs finished; 2 not run yet/);
    await assert.rejects(
      run(process.execPath, [msd, 'eval', '--config', 'grid.json', '--report-only', '--detection'], { cwd: dir, timeout: 60_000 }),
      (error: { code?: number; stderr?: string }) => error.code === 2 && /--report-only .* does not go with --detection/.test(error.stderr ?? ''),
    );
  });
});
