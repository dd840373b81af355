import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { validateConfig } from '../../../src/eval/config.js';
import { evaluate } from '../../../src/eval/grid/evaluate.js';
import { trainingEnv } from '../../../src/eval/run/parallel.js';
import { syntheticLoader } from '../helpers/synthetic-data.js';

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
const temp = async (prefix: string) => {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
};

describe('--jobs', () => {
  it('each job trains on one thread, whatever the cores, unless MSD_TRAIN_THREADS says otherwise (onnxruntime’s results change with its threads)', () => {
    const saved = process.env.MSD_TRAIN_THREADS;
    try {
      delete process.env.MSD_TRAIN_THREADS;
      assert.equal(trainingEnv().MSD_TRAIN_THREADS, '1');
      process.env.MSD_TRAIN_THREADS = '3';
      assert.equal(trainingEnv().MSD_TRAIN_THREADS, '3');
    } finally {
      if (saved === undefined) delete process.env.MSD_TRAIN_THREADS;
      else process.env.MSD_TRAIN_THREADS = saved;
    }
  });

  it('two processes give the same records as one, seeds included', async () => {
    const config = validateConfig({
      name: 'tiny-jobs',
      world: 'closed',
      closedWorldPool: 200,
      defenses: ['none', 'mad:eps=0.5'],
      policies: ['random'],
      budgets: [200],
      seeds: 2,
      attackerLabels: ['soft'],
      victimTraining: { arch: 'mlp', epochs: 1, batchSize: 32 },
      knockoffTraining: { arch: 'mlp', epochs: 1, batchSize: 32 },
    });
    const cacheDir = await temp('msd-cache-');
    const loader = syntheticLoader({ train: 600, test: 200 });
    const serial = await evaluate({ config, outDir: await temp('msd-eval-'), cacheDir, loadDataset: loader, jobs: 1 });
    const parallel = await evaluate({ config, outDir: await temp('msd-eval-'), cacheDir, loadDataset: loader, jobs: 2 });
    assert.equal(serial.ran, 4);
    assert.equal(parallel.ran, 4);
    const outcome = (records: typeof serial.records) =>
      records.map((r) => ({ key: r.key, attackerSeed: r.attackerSeed, defender: r.defender, attackers: r.attackers, queries: r.queries }));
    assert.deepEqual(outcome(parallel.records), outcome(serial.records));
    // The two attacker seeds are two runs of the setting, stored apart.
    const none = serial.records.filter((r) => r.defense === 'none');
    assert.deepEqual(none.map((r) => r.attackerSeed).sort(), [0, 1]);
    assert.equal(new Set(none.map((r) => r.key)).size, 2);
  });
});
