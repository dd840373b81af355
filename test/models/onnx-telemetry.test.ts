import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { scratchDir } from '../helpers/scratch.js';

const child = fileURLToPath(new URL('./onnx-telemetry-child.ts', import.meta.url));

/** Runs the child with `env` over a clean copy of this environment; the files it left in its temporary folder. */
async function leftInTmp(env: Record<string, string>): Promise<string[]> {
  const tmp = await scratchDir('msd-ort-');
  const base = { ...process.env };
  delete base.ORT_DISABLE_TELEMETRY;
  await promisify(execFile)(process.execPath, ['--import', 'tsx', child], { env: { ...base, TMPDIR: tmp, ...env }, timeout: 60_000 });
  return (await readdir(tmp)).filter((name) => name.startsWith('mat-debug-'));
}

describe('onnxruntime telemetry', { timeout: 120_000 }, () => {
  it('stays off for ONNX surrogates in the main thread and in a worker thread', async () => {
    assert.deepEqual(await leftInTmp({}), []);
  });

  it('is the user’s choice when ORT_DISABLE_TELEMETRY is set (0 turns it back on, and its trace file shows it)', async () => {
    assert.ok((await leftInTmp({ ORT_DISABLE_TELEMETRY: '0' })).length > 0);
  });
});
