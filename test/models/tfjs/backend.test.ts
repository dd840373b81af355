import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { BackendError, formatBackendInfo, initBackend, parseBackendName, tf, withCpuFallback } from '../../../src/models/index.js';
import { setUpBackend } from '../helpers.js';

let active: string;
before(async () => {
  active = await setUpBackend();
});

describe('initBackend', () => {
  it('starts wasm or cpu here (the native packages are not installed) and says why the others failed', async () => {
    const info = await initBackend({ log: () => {} });
    assert.equal(info.name, active);
    assert.ok(info.name === 'wasm' || info.name === 'cpu');
    assert.equal(tf.getBackend(), info.tfBackend);
    assert.ok(info.threads >= 1);
    assert.match(info.versions['tfjs-core'] ?? '', /^4\./);
    if (info.chosenBy === 'auto') {
      assert.deepEqual(
        info.failures.map((f) => f.backend),
        ['tensorflow-gpu', 'tensorflow'],
      );
      assert.ok(info.failures.every((f) => f.reason === 'package not installed'));
    }
    const text = formatBackendInfo(info);
    assert.match(text, new RegExp(`backend: +${info.name}`));
    assert.match(text, /threads: +\d+/);
  });

  it('is idempotent: a second call gives the same answer without logging again', async () => {
    const lines: string[] = [];
    const first = await initBackend({ log: (l) => lines.push(l) });
    const second = await initBackend({ log: (l) => lines.push(l) });
    assert.equal(first, second);
    assert.ok(lines.length <= 1);
  });

  it('honours MSD_BACKEND and fails loudly when it names an unavailable or unknown backend', async () => {
    const saved = process.env.MSD_BACKEND;
    try {
      process.env.MSD_BACKEND = 'tensorflow-gpu';
      await assert.rejects(
        initBackend({ log: () => {} }),
        (e: unknown) => e instanceof BackendError && /MSD_BACKEND=tensorflow-gpu cannot start \(tensorflow-gpu: package not installed\)/.test(e.message),
      );
      process.env.MSD_BACKEND = 'tpu';
      await assert.rejects(initBackend({ log: () => {} }), /MSD_BACKEND "tpu" is not a backend; use one of tensorflow-gpu, tensorflow, wasm, cpu/);
    } finally {
      if (saved === undefined) delete process.env.MSD_BACKEND;
      else process.env.MSD_BACKEND = saved;
    }
    const info = await initBackend({ log: () => {} });
    assert.equal(info.name, active, 'the original choice comes back');
  });

  it('parses backend names and aliases', () => {
    assert.equal(parseBackendName('GPU'), 'tensorflow-gpu');
    assert.equal(parseBackendName('tfjs-node'), 'tensorflow');
    assert.equal(parseBackendName(' wasm '), 'wasm');
    assert.throws(() => parseBackendName('webgl'), BackendError);
  });
});

describe('withCpuFallback', () => {
  it('reruns work on cpu when a kernel is missing, says so once, and restores the backend', () => {
    const lines: string[] = [];
    const backends: string[] = [];
    const work = () => {
      backends.push(tf.getBackend());
      if (tf.getBackend() !== 'cpu') throw new Error(`Kernel 'FakeKernel' not registered for backend '${tf.getBackend()}'`);
      return 42;
    };
    if (active === 'cpu') {
      assert.equal(
        withCpuFallback('work', work, (l) => lines.push(l)),
        42,
      );
      assert.deepEqual(backends, ['cpu']);
      return;
    }
    assert.equal(
      withCpuFallback('the work', work, (l) => lines.push(l)),
      42,
    );
    assert.equal(
      withCpuFallback('the work', work, (l) => lines.push(l)),
      42,
    );
    assert.deepEqual(backends, [active, 'cpu', active, 'cpu']);
    assert.deepEqual(lines, [`tfjs backend ${active} has no FakeKernel kernel: running the work on cpu`]);
    assert.equal(tf.getBackend(), active);
  });

  it('passes other errors through', () => {
    assert.throws(
      () =>
        withCpuFallback(
          'work',
          () => {
            throw new RangeError('not a kernel problem');
          },
          () => {},
        ),
      RangeError,
    );
  });

  it('lets a real missing kernel work (a convolution filter gradient on wasm)', () => {
    const filterGradient = () =>
      tf.tidy(() => {
        const x = tf.ones([1, 4, 4, 1]) as tf.Tensor4D;
        return tf
          .grad((f: tf.Tensor) => tf.conv2d(x, f as tf.Tensor4D, 1, 'valid').sum())(tf.ones([2, 2, 1, 1]))
          .dataSync();
      });
    const gradient = withCpuFallback('a filter gradient', filterGradient, () => {});
    assert.deepEqual(Array.from(gradient), [9, 9, 9, 9]);
    assert.equal(tf.getBackend(), active);
  });
});
