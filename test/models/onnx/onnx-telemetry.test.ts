import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { scratchDir } from '../../helpers/scratch.js';

const child = fileURLToPath(new URL('./onnx-telemetry-child.ts', import.meta.url));

interface ChildRun {
  /** ORT_DISABLE_TELEMETRY in the process environment once onnxruntime has started. */
  setting: string | null;
  /** Trace files the telemetry client left in the child's temporary folder. */
  traces: string[];
}

/** Runs an ONNX surrogate in a fresh process, in its main thread or a worker thread, with `env` over a clean copy of this one. */
async function runChild(thread: 'main' | 'worker', env: Record<string, string>): Promise<ChildRun> {
  const tmp = await scratchDir('msd-ort-');
  const base = { ...process.env };
  delete base.ORT_DISABLE_TELEMETRY;
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', child, thread], {
    env: { ...base, TMPDIR: tmp, ...env },
    timeout: 60_000,
  });
  const setting = (JSON.parse(stdout) as { ORT_DISABLE_TELEMETRY: string | null }).ORT_DISABLE_TELEMETRY;
  return { setting, traces: (await readdir(tmp)).filter((name) => name.startsWith('mat-debug-')) };
}

// The setting is what the library reads (getenv); the trace file is what onnxruntime 1.30's Linux
// telemetry client leaves when it runs, on machines where it writes one (some never do).
describe('onnxruntime telemetry', { timeout: 180_000 }, () => {
  for (const thread of ['main', 'worker'] as const) {
    it(`is off for an ONNX surrogate in the ${thread} thread unless the user chose`, async () => {
      assert.deepEqual(await runChild(thread, {}), { setting: '1', traces: [] });
    });

    it(`keeps the user's ORT_DISABLE_TELEMETRY for the ${thread} thread`, async () => {
      assert.equal((await runChild(thread, { ORT_DISABLE_TELEMETRY: '0' })).setting, '0');
    });
  }
});
