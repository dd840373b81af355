/**
 * The threaded surrogate against the same surrogate in this thread: same probabilities and Gram
 * matrices (TF.js layers model with a residual add and batch norm, its re-initialised variant, ONNX),
 * the loader's errors with their class and file, dispose and a crashed worker failing every call, and
 * the forward pass running off this thread (no kernel here, the event loop turning meanwhile).
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import {
  currentBackend,
  loadSurrogate,
  loadThreadedSurrogate,
  ModelError,
  ModelFileError,
  ModelInputError,
  saveModel,
  SurrogateThreadError,
  tf,
  writeOnnxModel,
  type SurrogateModel,
} from '../../../src/models/index.js';
import { exitSurrogateThreadOnNextCall, holdSurrogateThreadOnNextCall } from '../../../src/models/surrogates/threaded-surrogate.js';
import { batchedSurrogateContext } from '../../../src/server/batching/batched-context.js';
import { scratchDir } from '../../helpers/scratch.js';
import { waitFor } from '../../helpers/wait.js';
import { inputs, setUpBackend } from '../helpers.js';

const SHAPE = [5, 5, 2];
const WIDTH = 5 * 5 * 2;
const CLASSES = 3;

/** conv → batch norm → relu, a residual add with a second conv, pooling, dense logits. */
function residualModel(): tf.LayersModel {
  const init = (seed: number) => tf.initializers.glorotUniform({ seed });
  const input = tf.input({ shape: SHAPE });
  const conv = tf.layers
    .conv2d({ filters: 3, kernelSize: 3, padding: 'same', kernelInitializer: init(1), biasInitializer: tf.initializers.constant({ value: 0.05 }) })
    .apply(input) as tf.SymbolicTensor;
  const norm = tf.layers
    .batchNormalization({
      gammaInitializer: tf.initializers.constant({ value: 1.2 }),
      betaInitializer: tf.initializers.constant({ value: -0.1 }),
      movingMeanInitializer: tf.initializers.constant({ value: 0.03 }),
      movingVarianceInitializer: tf.initializers.constant({ value: 1.5 }),
    })
    .apply(conv) as tf.SymbolicTensor;
  const relu = tf.layers.reLU().apply(norm) as tf.SymbolicTensor;
  const branch = tf.layers.conv2d({ filters: 3, kernelSize: 3, padding: 'same', kernelInitializer: init(2) }).apply(relu) as tf.SymbolicTensor;
  const sum = tf.layers.add().apply([relu, branch]) as tf.SymbolicTensor;
  const pooled = tf.layers.globalAveragePooling2d({}).apply(sum) as tf.SymbolicTensor;
  const logits = tf.layers
    .dense({ units: CLASSES, kernelInitializer: init(3), biasInitializer: tf.initializers.constant({ value: 0.2 }) })
    .apply(pooled) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: logits });
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++)
    assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance * Math.max(1, Math.abs(expected[i])), `value ${i}: ${actual[i]} vs ${expected[i]}`);
}

/** Both surrogates' probabilities (and Gram matrices when asked) on the same rows. */
async function compare(threaded: SurrogateModel, local: SurrogateModel, gram: boolean): Promise<void> {
  assert.equal(threaded.classes, local.classes);
  assert.deepEqual([...threaded.inputShape], [...local.inputShape]);
  assert.equal(threaded.differentiable, local.differentiable);
  const width = local.inputShape.reduce((a, b) => a * b, 1);
  const x = inputs(3, width, 5);
  const [a, b] = await Promise.all([threaded.probsAsync(x, 3), local.probsAsync(x, 3)]);
  assert.equal(a.rows, 3);
  assert.equal(a.cols, b.cols);
  assert.ok(a.data instanceof Float32Array);
  assertClose(a.data, b.data, 1e-5);
  assert.deepEqual(x, inputs(3, width, 5), 'the caller’s rows are untouched (copied, not transferred)');
  if (gram) {
    assert.ok(threaded.gramAsync && local.gramAsync);
    const [ga, gb] = await Promise.all([threaded.gramAsync(x, 3), local.gramAsync(x, 3)]);
    assert.ok(ga instanceof Float64Array);
    assertClose(ga, gb, 1e-4);
  }
}

let dir: string;
before(async () => {
  await setUpBackend();
  dir = join(await scratchDir('msd-threaded-'), 'residual');
  const model = residualModel();
  await saveModel(model, dir);
  model.dispose();
});

describe('loadThreadedSurrogate: the same answers as in this thread', () => {
  it('a functional layers model (residual add, batch norm): probabilities and Gram matrices', async () => {
    const threaded = await loadThreadedSurrogate({ dir });
    const local = await loadSurrogate({ dir });
    try {
      assert.equal(threaded.backend.name, currentBackend()!.name, 'the worker starts the main thread’s backend');
      assert.notEqual(threaded.threadId, 0);
      await compare(threaded, local, true);
    } finally {
      threaded.dispose();
      local.dispose();
    }
  });

  it('the re-initialised variant from the same seed, through loadSurrogate({thread: true})', async () => {
    const threaded = await loadSurrogate({ dir, reinit: 11, thread: true });
    const local = await loadSurrogate({ dir, reinit: 11 });
    const trained = await loadSurrogate({ dir });
    try {
      await compare(threaded, local, false);
      const x = inputs(2, WIDTH, 9);
      const [fresh, original] = await Promise.all([threaded.probsAsync(x, 2), trained.probsAsync(x, 2)]);
      assert.notDeepEqual(Array.from(fresh.data), Array.from(original.data), 'reinit drew new weights in the worker too');
    } finally {
      for (const s of [threaded, local, trained]) s.dispose();
    }
  });

  it('an ONNX surrogate, from bytes and from a file (forward-only: no gramAsync)', async () => {
    const bytes = writeOnnxModel({
      inputs: [{ name: 'x', shape: ['batch', 4] }],
      outputs: [{ name: 'probs', shape: ['batch', 2] }],
      initializers: [
        { name: 'W', dims: [4, 2], data: Float32Array.from([0.5, -1, 0.25, 2, -0.5, 1, 1, -1.5]) },
        { name: 'b', dims: [2], data: Float32Array.from([0.1, -0.2]) },
      ],
      nodes: [
        { op: 'Gemm', inputs: ['x', 'W', 'b'], outputs: ['z'] },
        { op: 'Softmax', inputs: ['z'], outputs: ['probs'], attributes: { axis: 1 } },
      ],
    });
    const file = join(await scratchDir('msd-threaded-onnx-'), 'tiny.onnx');
    await writeFile(file, bytes);
    const local = await loadSurrogate({ onnx: bytes });
    for (const threaded of [await loadThreadedSurrogate({ onnx: bytes }), await loadThreadedSurrogate({ dir: file })]) {
      try {
        assert.equal(threaded.gramAsync, undefined);
        await compare(threaded, local, false);
      } finally {
        threaded.dispose();
      }
    }
    local.dispose();
  });
});

describe('loadThreadedSurrogate: errors', () => {
  it('a bad directory rejects as loadSurrogate does, naming the file', async () => {
    const missing = join(dir, 'no-such-model');
    const local = await loadSurrogate({ dir: missing }).then(
      () => assert.fail('loaded a missing model'),
      (error: Error) => error,
    );
    await assert.rejects(loadThreadedSurrogate({ dir: missing }), (error: Error) => {
      assert.ok(error instanceof ModelError, `${error.name}: ${error.message}`);
      assert.equal(error.name, local.name);
      assert.equal(error.message, local.message);
      assert.ok(error.message.includes(missing), error.message);
      if (local instanceof ModelFileError) assert.equal((error as ModelFileError).file, local.file);
      return true;
    });
  });

  it('refuses a model object, saying to pass a directory', async () => {
    const model = residualModel();
    try {
      await assert.rejects(loadThreadedSurrogate({ model }), (e: unknown) => e instanceof ModelError && /pass its directory \(dir\)/.test(e.message));
      await assert.rejects(
        loadSurrogate({ model, thread: true }),
        (e: unknown) => e instanceof ModelError && /cannot be moved to a worker thread/.test(e.message),
      );
      await assert.rejects(loadSurrogate({ model, backend: 'cpu' }), (e: unknown) => e instanceof ModelError && /thread: true/.test(e.message));
    } finally {
      model.dispose();
    }
  });

  it('bad input rows reject as ModelInputError, and the surrogate keeps working', async () => {
    const threaded = await loadThreadedSurrogate({ dir });
    try {
      await assert.rejects(threaded.probsAsync(new Float32Array(WIDTH - 1), 1), ModelInputError);
      const rows = inputs(1, WIDTH);
      rows[3] = Number.NaN;
      await assert.rejects(threaded.probsAsync(rows, 1), /non-finite/);
      assert.equal((await threaded.probsAsync(inputs(1, WIDTH), 1)).rows, 1);
    } finally {
      threaded.dispose();
    }
  });
});

describe('loadThreadedSurrogate: the worker’s end', () => {
  it('dispose rejects the call in flight and every later call', async () => {
    const threaded = await loadThreadedSurrogate({ dir });
    const inFlight = threaded.probsAsync(inputs(2, WIDTH), 2);
    threaded.dispose();
    await assert.rejects(inFlight, (e: unknown) => e instanceof SurrogateThreadError && /disposed/.test(e.message));
    await assert.rejects(threaded.probsAsync(inputs(1, WIDTH), 1), SurrogateThreadError);
    await assert.rejects(threaded.gramAsync!(inputs(1, WIDTH), 1), SurrogateThreadError);
  });

  it('a worker that dies mid-call rejects that call and later ones, and the batched context fails closed', async () => {
    const threaded = await loadThreadedSurrogate({ dir });
    const context = batchedSurrogateContext({ surrogate: threaded }, { windowMs: 0 });
    try {
      const before = await context(['surrogate'], { rows: 1, cols: WIDTH, data: inputs(1, WIDTH) });
      assert.equal(before.surrogateProbs!.rows, 1);
      exitSurrogateThreadOnNextCall(threaded, 7);
      await assert.rejects(threaded.probsAsync(inputs(1, WIDTH), 1), (e: unknown) => e instanceof SurrogateThreadError && /exited with code 7/.test(e.message));
      await assert.rejects(threaded.probsAsync(inputs(1, WIDTH), 1), /exited with code 7/);
      await assert.rejects(context(['surrogate'], { rows: 1, cols: WIDTH, data: inputs(1, WIDTH) }), SurrogateThreadError);
    } finally {
      await context.close();
      threaded.dispose();
    }
  });
});

describe('loadThreadedSurrogate: the forward pass runs off this thread', () => {
  it('runs no kernel here and lets the event loop turn while it computes', async () => {
    const threaded = await loadThreadedSurrogate({ dir });
    const local = await loadSurrogate({ dir });
    try {
      const x = inputs(8, WIDTH, 2);
      await threaded.probsAsync(x, 8); // warm-up: the worker's first pass compiles its kernels
      const here = await tf.profile(async () => void (await local.probsAsync(x, 8)));
      assert.ok(here.kernels.length > 0, 'the in-thread surrogate runs kernels here (the profile sees them)');
      const profile = await tf.profile(async () => void (await threaded.probsAsync(x, 8)));
      assert.deepEqual(profile.kernels, [], 'no kernel ran in this thread');
      // The worker holds the next call, its thread blocked before computing, until released: whatever
      // the machine's speed, the turns counted below happen while the worker is busy with that call.
      const held = holdSurrogateThreadOnNextCall(threaded);
      let answered = false;
      const call = threaded.probsAsync(x, 8).finally(() => {
        answered = true;
      });
      try {
        await waitFor(() => held.holding(), { what: 'the worker to hold the call' });
        for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
        assert.ok(held.holding(), 'the event loop turned while the worker was blocked in the call');
        assert.equal(answered, false, 'the call is still in the worker');
      } finally {
        held.release();
      }
      const result = await call;
      assert.equal(result.rows, 8);
      assertClose(result.data, (await local.probsAsync(x, 8)).data, 1e-5);
    } finally {
      threaded.dispose();
      local.dispose();
    }
  });
});
