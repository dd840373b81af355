import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { batchFromRows, parseDefense } from '../../src/defenses/index.js';
import { createModel, initBackend, saveModel, Surrogate } from '../../src/models/index.js';
import { runCli } from '../helpers/run-cli.js';

describe('perturb with a saved surrogate and model inputs', () => {
  let dir = '';
  const inputs = [
    [0.1, 0.9, 0.3, 0.2],
    [0.8, 0.1, 0.5, 0.7],
  ];
  const probs = [
    [0.7, 0.2, 0.1],
    [0.1, 0.3, 0.6],
  ];

  before(async () => {
    await initBackend({ prefer: 'cpu' });
    dir = await mkdtemp(join(tmpdir(), 'msd-perturb-'));
    const model = createModel({ arch: 'mlp', inputShape: [4], classes: 3, seed: 7, hidden: [5] });
    await saveModel(model, join(dir, 'surrogate'));
    model.dispose();
    await writeFile(join(dir, 'answers.json'), JSON.stringify({ probs }));
    await writeFile(join(dir, 'inputs.json'), JSON.stringify(inputs));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('computes the surrogate’s probabilities from the inputs, as the library does', async () => {
    const result = runCli(
      ['perturb', '-d', 'mad:eps=0.4', '-i', join(dir, 'answers.json'), '--inputs', join(dir, 'inputs.json'), '--surrogate', join(dir, 'surrogate')],
      undefined,
      { MSD_BACKEND: 'cpu' },
    );
    assert.equal(result.status, 0, result.stderr);
    const out = JSON.parse(result.stdout) as { probs: number[][]; l1: number[] };
    const surrogate = await Surrogate.load(join(dir, 'surrogate'));
    const expected = parseDefense('mad:eps=0.4').apply(batchFromRows(probs), { surrogateProbs: surrogate.probs(Float32Array.from(inputs.flat()), 2) });
    surrogate.dispose();
    out.probs.flat().forEach((v, i) => assert.ok(Math.abs(v - expected.data[i]) < 1e-6, `value ${i}: ${v} vs ${expected.data[i]}`));
    out.l1.forEach((l1) => assert.ok(Math.abs(l1 - 0.4) < 1e-5));
  });

  it('computes Gram matrices for jacobian=full', () => {
    const result = runCli(
      [
        'perturb',
        '-d',
        'mad-argmax:eps=0.4,jacobian=full',
        '-i',
        join(dir, 'answers.json'),
        '--inputs',
        join(dir, 'inputs.json'),
        '--surrogate',
        join(dir, 'surrogate'),
      ],
      undefined,
      { MSD_BACKEND: 'cpu' },
    );
    assert.equal(result.status, 0, result.stderr);
    const out = JSON.parse(result.stdout) as { top1Changed: boolean[] };
    assert.deepEqual(out.top1Changed, [false, false]);
  });

  it('refuses inputs that do not match the rows, and a missing model directory, with exit 2', async () => {
    await writeFile(join(dir, 'short.json'), JSON.stringify([inputs[0]]));
    const short = runCli(['perturb', '-d', 'mad', '-i', join(dir, 'answers.json'), '--inputs', join(dir, 'short.json'), '--surrogate', join(dir, 'surrogate')]);
    assert.equal(short.status, 2);
    assert.match(short.stderr, /1 input rows for 2 probability rows/);
    const missing = runCli(
      ['perturb', '-d', 'mad', '-i', join(dir, 'answers.json'), '--inputs', join(dir, 'inputs.json'), '--surrogate', join(dir, 'nowhere')],
      undefined,
      { MSD_BACKEND: 'cpu' },
    );
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nowhere/);
    assert.equal(missing.stdout, '');
  });
});
