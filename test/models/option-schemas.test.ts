/** The models layer's option objects checked by their schemas: the field, what was given, what to write; unknown keys with the allowed list. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  calibrateHodaOnHeldOut,
  calibrateHodaWithSurrogates,
  checkpointRecorder,
  createModel,
  initBackend,
  loadSurrogate,
  ModelError,
  ModelInputError,
  OnnxSurrogate,
  Surrogate,
  TfjsSurrogate,
  trainModel,
  type LayersModel,
} from '../../src/models/index.js';
import { parseSurrogateOutput } from '../../src/models/surrogate-output.js';
import { SERIALISABLE_SURROGATE_OPTIONS } from '../../src/models/surrogates/load-surrogate-schema.js';
import { inputs, setUpBackend, tinyMlp } from './helpers.js';

const refusedWith = (errorClass: typeof ModelError) => (run: () => unknown, message: RegExp) =>
  assert.throws(run, (e: unknown) => e instanceof errorClass && message.test((e as Error).message), `expected ${message}`);

describe('createModel options', () => {
  before(setUpBackend);
  const refused = refusedWith(ModelInputError);
  const spec = { arch: 'mlp', inputShape: [4], classes: 3, seed: 1 } as const;

  it('names the field, what was given and what to write', () => {
    refused(() => createModel({ ...spec, arch: 'vgg' as never }), /^arch "vgg" is not one of mlp, lenet, cnn$/);
    refused(() => createModel({ ...spec, classes: 1 }), /^classes must be an integer ≥ 2, got 1$/);
    refused(() => createModel({ ...spec, inputShape: [4, 0] }), /^inputShape\[1\] must be a positive integer, got 0$/);
    refused(() => createModel({ ...spec, inputShape: [] }), /^inputShape must be a non-empty list of positive integers, .*, got \[\]$/);
    refused(() => createModel({ ...spec, seed: 0.5 }), /^seed must be an integer, got 0\.5$/);
    refused(() => createModel({ ...spec, hidden: [8, -1] }), /^hidden\[1\] must be a positive integer \(a layer width\), got -1$/);
    refused(() => createModel({ ...spec, arch: 'lenet', filters: [6] as never }), /^filters must be two channel counts, e\.g\. \[6, 16\], got \[6\]$/);
  });

  it('refuses unknown options, listing the allowed ones', () => {
    refused(() => createModel({ ...spec, layers: [8] } as never), /^unknown option\(s\) layers; allowed: arch, inputShape, classes, seed, hidden, filters$/);
  });
});

describe('trainModel options', () => {
  let model: LayersModel;
  before(async () => {
    await setUpBackend();
    model = tinyMlp();
  });
  after(() => model.dispose());
  const data = () => ({ x: inputs(4, 16), rows: 4, labels: new Uint8Array([0, 1, 2, 0]) });
  const refused = (options: object, message: RegExp) =>
    assert.rejects(
      trainModel(model, data(), options as never),
      (e: unknown) => e instanceof ModelInputError && message.test((e as Error).message),
      `expected ${message}`,
    );

  it('names the field, what was given and what to write', async () => {
    await refused({ epochs: 1, learningRate: 0 }, /^learningRate must be a positive number, got 0$/);
    await refused({ epochs: 1, batchSize: '32' }, /^batchSize must be an integer ≥ 1, got "32"$/);
    await refused({ epochs: 1, loss: 'mse' }, /^loss "mse" is not one of soft-ce, misinformation$/);
    await refused({ epochs: 1, onProgress: 'log' }, /^onProgress must be a function \(progress\) => void, got "log"$/);
    await refused({ epochs: 1, validation: { x: [0], labels: [0] } }, /^validation\.x must be a Float32Array of rows, got \[0\]$/);
  });

  it('refuses unknown options, listing the allowed ones', async () => {
    await refused({ epochs: 1, lr: 0.01 }, /^unknown option\(s\) lr; allowed: epochs, batchSize, learningRate, seed, loss, validation, onProgress, onStep, /);
  });
});

describe('loadSurrogate options', () => {
  const refused = (options: object, message: RegExp) =>
    assert.rejects(loadSurrogate(options as never), (e: unknown) => e instanceof ModelError && message.test((e as Error).message), `expected ${message}`);

  it('names the field, what was given and what to write, before reading any file', async () => {
    await refused({ dir: '/nowhere', reinit: -1 }, /^reinit must be an integer seed in 0\.\.4294967295, got -1$/);
    await refused({ dir: '/nowhere', engine: 'torch' }, /^engine must be one of tfjs, onnx, got "torch"$/);
    await refused({ dir: '/nowhere', chunkRows: 0 }, /^chunkRows must be a positive integer, got 0$/);
    await refused({ dir: '/nowhere', backend: 'gpu' }, /^backend must be one of tensorflow-gpu, tensorflow, wasm, cpu, got "gpu"$/);
    await refused({ onnx: 5 }, /^onnx must be an ONNX file path or its bytes \(Uint8Array\), got 5$/);
    await refused({ dir: '/nowhere', check: 'yes' }, /^check must be true, false or \{ victim, probes, log \}, got "yes"$/);
  });

  it('refuses unknown options, listing the allowed ones, in the options and in check', async () => {
    await refused({ folder: '/nowhere' }, /^unknown option\(s\) folder; allowed: path, dir, model, onnx, reinit, /);
    await refused({ dir: '/nowhere', check: { victm: '/v' } }, /^check: unknown option\(s\) victm; allowed: probes, victim, log$/);
  });

  it('sends a worker thread every option but the ones that stay in this thread', () => {
    assert.deepEqual([...SERIALISABLE_SURROGATE_OPTIONS].sort(), [
      'chunkRows',
      'classes',
      'dir',
      'engine',
      'inputShape',
      'onnx',
      'output',
      'outputName',
      'path',
      'reinit',
      'threads',
      'usePlan',
    ]);
  });
});

describe('Surrogate options', () => {
  let model: LayersModel;
  before(async () => {
    await setUpBackend();
    model = tinyMlp();
  });
  after(() => model.dispose());
  const refused = refusedWith(ModelInputError);

  it('names the field, what was given and what to write; unknown keys list the allowed ones', () => {
    refused(() => new Surrogate(model, { gramChunkRows: 0 }), /^gramChunkRows must be a positive integer, got 0$/);
    refused(() => new Surrogate(model, { gramChunkRows: 2.5 }), /^gramChunkRows must be a positive integer, got 2\.5$/);
    refused(() => new Surrogate(model, { gramMethod: 'exact' as never }), /^gramMethod "exact" is not one of dense, autodiff$/);
    refused(() => new Surrogate(model, { chunkRows: 8 } as never), /^unknown option\(s\) chunkRows; allowed: gramChunkRows, gramMethod$/);
    refused(() => Surrogate.random({ arch: 'mlp', inputShape: [4], classes: 3, seed: 1 }, { gramChunkRows: -1 }), /^gramChunkRows must be a positive integer/);
  });

  it('refuses bad options before reading the model', async () => {
    await assert.rejects(
      Surrogate.load('/nowhere', { gramMethod: 'x' as never }),
      (e: unknown) => e instanceof ModelInputError && /^gramMethod "x"/.test((e as Error).message),
    );
  });
});

describe('initBackend, parseSurrogateOutput and the HODA options', () => {
  before(setUpBackend);

  it('initBackend names a bad option (a rejected promise, as for a backend that cannot start)', async () => {
    const refused = (options: object, message: RegExp) =>
      assert.rejects(initBackend(options as never), (e: unknown) => e instanceof ModelError && message.test((e as Error).message), `expected ${message}`);
    await refused({ prefer: 'gpu' }, /^prefer "gpu" is not one of tensorflow-gpu, tensorflow, wasm, cpu$/);
    await refused({ log: 'stderr' }, /^log must be a function \(line\) => void, .*, got "stderr"$/);
    await refused({ prefr: 'cpu' }, /^unknown option\(s\) prefr; allowed: prefer, log$/);
  });

  it('parseSurrogateOutput reads the output option, auto by default', () => {
    assert.equal(parseSurrogateOutput(undefined), 'auto');
    assert.equal(parseSurrogateOutput('logits'), 'logits');
    refusedWith(ModelInputError)(() => parseSurrogateOutput('softmax'), /^output must be one of auto, logits, probs, got "softmax"$/);
  });

  it('checkpointRecorder and the held-out calibrations name a bad option', async () => {
    const model = tinyMlp();
    try {
      const refused = refusedWith(ModelInputError);
      refused(() => checkpointRecorder(model, 1), /^checkpoints must be an integer ≥ 2, got 1$/);
      const x = inputs(8, 4);
      refused(() => calibrateHodaOnHeldOut([model, model], x, 8, { orders: 0 }), /^orders must be a positive integer, got 0$/);
      refused(
        () => calibrateHodaOnHeldOut([model, model], x, 8, { lengths: [100, -1] }),
        /^lengths\[1\] must be a positive integer \(a chunk length\), got -1$/,
      );
      refused(() => calibrateHodaOnHeldOut([model, model], x, 8, { seed: 'a' } as never), /^seed must be an integer seed in 0\.\.4294967295, got "a"$/);
      refused(() => calibrateHodaOnHeldOut([model, model], x, 8, { chunkRows: 4 } as never), /^unknown option\(s\) chunkRows; allowed: seed, orders, lengths$/);
      const surrogate = new Surrogate(model);
      await assert.rejects(
        calibrateHodaWithSurrogates([surrogate, surrogate], x, 8, { chunkRows: 0 }),
        (e: unknown) => e instanceof ModelInputError && /^chunkRows must be a positive integer, got 0$/.test((e as Error).message),
      );
    } finally {
      model.dispose();
    }
  });
});

describe('TfjsSurrogate and OnnxSurrogate options', () => {
  let model: LayersModel;
  before(async () => {
    await setUpBackend();
    model = tinyMlp();
  });
  after(() => model.dispose());
  const refused = (run: () => Promise<unknown>, message: RegExp) =>
    assert.rejects(run(), (e: unknown) => e instanceof ModelError && message.test((e as Error).message), `expected ${message}`);

  it('are checked in loadSurrogate’s words, before any model is read', async () => {
    await refused(() => TfjsSurrogate.create(model, { chunkRows: 0 }), /^chunkRows must be a positive integer, got 0$/);
    await refused(() => TfjsSurrogate.create(model, { output: 'softmax' as never }), /^output must be one of auto, logits, probs, got "softmax"$/);
    await refused(
      () => TfjsSurrogate.create(model, { threads: 2 } as never),
      /^unknown option\(s\) threads; allowed: output, chunkRows, outputName, inputShape, classes$/,
    );
    await refused(() => OnnxSurrogate.load('/nowhere.onnx', { threads: -1 }), /^threads must be an integer ≥ 0 \(0: onnxruntime’s default\), got -1$/);
    await refused(() => OnnxSurrogate.load('/nowhere.onnx', { inputShape: [0] }), /^inputShape\[0\] must be a positive integer, got 0$/);
    await refused(
      () => OnnxSurrogate.load('/nowhere.onnx', { classes: 3 } as never),
      /^unknown option\(s\) classes; allowed: reinit, output, chunkRows, inputShape, outputName, threads$/,
    );
  });
});
