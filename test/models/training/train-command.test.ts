import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runCli } from '../../helpers/run-cli.js';

const scratch = mkdtempSync(join(tmpdir(), 'msd-cli-models-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const msd = (...args: string[]) => runCli(args);

describe('msd train', () => {
  it('trains on a slice of MNIST, prints the test accuracy and saves the model with its meta', () => {
    const out = join(scratch, 'model');
    const run = msd(
      'train',
      '--dataset',
      'mnist',
      '--arch',
      'mlp',
      '--epochs',
      '1',
      '--limit',
      '1500',
      '--test-limit',
      '1000',
      '--batch-size',
      '100',
      '--out',
      out,
      '--quiet',
    );
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^test accuracy \d+\.\d\d% \(mnist, mlp, soft-ce, 1 epochs, .* images\/s on (wasm|cpu|onnxruntime \(1 thread\))\) → /);
    assert.ok(existsSync(join(out, 'model.json')) && existsSync(join(out, 'weights.bin')));
    const meta = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8'));
    assert.equal(meta.dataset, 'mnist');
    assert.equal(meta.arch, 'mlp');
    assert.equal(meta.trainRows, 1500);
    assert.equal(meta.testRows, 1000);
    // 1,500 images and one epoch already beat chance by far.
    assert.ok(meta.testAccuracy > 0.75, `accuracy ${meta.testAccuracy}`);
    assert.match(meta.backend, /^(wasm|cpu|onnxruntime \(1 thread\))$/);
  });

  it('rejects bad options with exit code 2 and a message naming the option', () => {
    const run = msd('train', '--dataset', 'cifar10', '--out', join(scratch, 'x'));
    assert.equal(run.status, 2);
    assert.match(run.stderr, /--dataset must be one of mnist, fashion-mnist, got "cifar10"/);
    const epochs = msd('train', '--epochs', '0', '--out', join(scratch, 'x'));
    assert.equal(epochs.status, 2);
    assert.match(epochs.stderr, /--epochs must be an integer ≥ 1/);
    const engine = msd('train', '--engine', 'torch', '--out', join(scratch, 'x'));
    assert.equal(engine.status, 2);
    assert.match(engine.stderr, /--engine must be one of auto, tfjs, onnxruntime, got "torch"/);
  });
});

describe('msd info', () => {
  it('prints the backend, versions and threads, as text or JSON', () => {
    const text = msd('info');
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /backend: +(wasm|cpu)/);
    assert.match(text.stdout, /versions: +tfjs-core 4\./);
    const json = msd('info', '--json');
    const info = JSON.parse(json.stdout);
    assert.ok(['wasm', 'cpu'].includes(info.name));
    assert.ok(info.threads >= 1);
  });

  it('exits 2 when MSD_BACKEND forces a backend that cannot start', () => {
    const run = runCli(['info'], undefined, { MSD_BACKEND: 'gpu' });
    assert.equal(run.status, 2);
    assert.match(run.stderr, /MSD_BACKEND=tensorflow-gpu cannot start/);
  });
});
