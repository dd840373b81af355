/** The models layer's option objects checked by their schemas: the field, what was given, what to write; unknown keys with the allowed list. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createModel, loadSurrogate, ModelError, ModelInputError, trainModel, type LayersModel } from '../../src/models/index.js';
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
