import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  checkSurrogate,
  createModel,
  loadSurrogate,
  ModelInputError,
  saveModel,
  surrogateOrigin,
  tf,
  trainModel,
  writeOnnxModel,
  type LayersModel,
} from '../../../src/models/index.js';
import { seededRandom } from '../../../src/models/random.js';
import { inputs, setUpBackend } from '../helpers.js';

before(setUpBackend);

/** A 16-feature, 3-class MLP trained a little on separable synthetic data (its biases move off zero). */
async function trainedVictim(): Promise<LayersModel> {
  const model = createModel({ arch: 'mlp', inputShape: [16], classes: 3, seed: 1, hidden: [8] });
  const rows = 240;
  const x = new Float32Array(rows * 16);
  const labels = new Int32Array(rows);
  const random = seededRandom(5);
  for (let i = 0; i < rows; i++) {
    labels[i] = i % 3;
    for (let j = 0; j < 16; j++) x[i * 16 + j] = random() * 0.5 + (j % 3 === labels[i] ? 1 : 0);
  }
  await trainModel(model, { x, rows, labels }, { epochs: 5, batchSize: 32, learningRate: 0.05, seed: 1, log: () => {} });
  return model;
}

/** A dense model whose softmax is the same for every input (zero kernel, equal biases). */
function constantModel(): LayersModel {
  return tf.sequential({ layers: [tf.layers.dense({ units: 3, inputShape: [16], kernelInitializer: 'zeros', biasInitializer: 'zeros' })] });
}

/** A dense model with huge weights: one-hot softmax, whose top class changes with the input. */
function oneHotModel(): LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.dense({
        units: 3,
        inputShape: [16],
        kernelInitializer: tf.initializers.randomUniform({ minval: -300, maxval: 300, seed: 4 }),
        biasInitializer: 'zeros',
      }),
    ],
  });
}

const codes = (warnings: { code: string }[]) => warnings.map((w) => w.code);

describe('checkSurrogate', () => {
  let dir: string;
  let victimDir: string;
  let victim: LayersModel;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-check-'));
    victimDir = join(dir, 'victim');
    victim = await trainedVictim();
    await saveModel(victim, victimDir);
  });
  after(async () => {
    victim.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('warns when the surrogate is the trained victim: by its weights when the victim is known, by its stored weights otherwise', async () => {
    const surrogate = await loadSurrogate({ path: victimDir });
    assert.deepEqual(surrogateOrigin(surrogate), { path: victimDir, onnx: undefined, model: undefined, reinit: undefined });
    const known = await checkSurrogate(surrogate, { victim: victimDir });
    assert.deepEqual(codes(known), ['victim-weights']);
    assert.match(known[0].message, /is the served model itself.*same fallback.*--reinit SEED/s);
    assert.deepEqual(codes(await checkSurrogate(surrogate, { victim })), ['victim-weights'], 'the victim as a model object');
    const guessed = await checkSurrogate(surrogate);
    assert.deepEqual(codes(guessed), ['stored-weights']);
    assert.match(guessed[0].message, /no reinit.*p = y.*--reinit SEED/s);
    // Another trained model is not the victim: no warning once the victim is known to differ.
    const other = await trainedVictim();
    const moved = other.getWeights().map((w) => tf.mul(w, 1.01));
    other.setWeights(moved);
    tf.dispose(moved);
    const otherSurrogate = await loadSurrogate({ model: other });
    assert.deepEqual(await checkSurrogate(otherSurrogate, { victim: victimDir }), []);
    otherSurrogate.dispose();
    surrogate.dispose();
  });

  it('says nothing of a re-initialised surrogate, in this thread or in a worker', async () => {
    const fresh = await loadSurrogate({ path: victimDir, reinit: 5 });
    assert.deepEqual(await checkSurrogate(fresh, { victim: victimDir }), []);
    assert.deepEqual(await checkSurrogate(fresh), []);
    fresh.dispose();
    const threaded = await loadSurrogate({ path: victimDir, reinit: 5, thread: true });
    assert.deepEqual(await checkSurrogate(threaded, { victim: victimDir }), []);
    threaded.dispose();
  });

  it('reads a threaded surrogate’s stored weights from its files', async () => {
    const threaded = await loadSurrogate({ dir: victimDir, thread: true });
    assert.deepEqual(codes(await checkSurrogate(threaded, { victim: victim })), ['victim-weights']);
    threaded.dispose();
  });

  it('warns when the softmax is the same for every input, or one-hot on every input', async () => {
    const constant = await loadSurrogate({ model: constantModel() });
    const warnings = await checkSurrogate(constant);
    assert.deepEqual(codes(warnings), ['constant']);
    assert.match(warnings[0].message, /same probabilities for all 4 random probe inputs.*carry no information/);
    constant.dispose();
    const oneHot = await loadSurrogate({ model: oneHotModel() });
    assert.deepEqual(codes(await checkSurrogate(oneHot, { probes: inputs(6, 16, 2) })), ['one-hot']);
    oneHot.dispose();
  });

  it('logs each warning on load with check, and checks the probes given', async () => {
    const lines: string[] = [];
    const surrogate = await loadSurrogate({ dir: victimDir, check: { victim: victimDir, log: (line) => lines.push(line) } });
    assert.equal(lines.length, 1);
    assert.match(lines[0], /^warning: surrogate \(victim-weights\): the surrogate is the served model itself/);
    await assert.rejects(checkSurrogate(surrogate, { probes: new Float32Array(15) }), ModelInputError);
    surrogate.dispose();
    lines.length = 0;
    (await loadSurrogate({ path: victimDir, reinit: 2, check: { victim: victimDir, log: (line) => lines.push(line) } })).dispose();
    assert.deepEqual(lines, []);
  });

  it('compares ONNX surrogates with an ONNX victim by their initializers', async () => {
    const file = join(dir, 'victim.onnx');
    const W = Float32Array.from([1, -1, 0.5, 0.2, 0.3, -0.4]);
    await writeFile(
      file,
      writeOnnxModel({
        inputs: [{ name: 'x', shape: ['n', 2] }],
        outputs: [{ name: 'y', shape: ['n', 3] }],
        initializers: [
          { name: 'W', dims: [2, 3], data: W },
          { name: 'b', dims: [3], data: Float32Array.from([0.1, -0.2, 0.3]) },
        ],
        nodes: [
          { op: 'MatMul', inputs: ['x', 'W'], outputs: ['z'] },
          { op: 'Add', inputs: ['z', 'b'], outputs: ['l'] },
          { op: 'Softmax', inputs: ['l'], outputs: ['y'], attributes: { axis: 1 } },
        ],
      }),
    );
    const same = await loadSurrogate({ onnx: file });
    assert.deepEqual(codes(await checkSurrogate(same, { victim: file })), ['victim-weights']);
    same.dispose();
    const fresh = await loadSurrogate({ onnx: file, reinit: 1 });
    assert.deepEqual(await checkSurrogate(fresh, { victim: file }), []);
    fresh.dispose();
  });

  it('says nothing of nsfwjs’s MobileNetV2 re-initialised, and knows the trained one for the victim', async () => {
    const nsfw = 'node_modules/nsfwjs/dist/models/mobilenet_v2';
    const fresh = await loadSurrogate({ dir: nsfw, reinit: 7 });
    assert.deepEqual(await checkSurrogate(fresh, { victim: nsfw }), []);
    fresh.dispose();
    const trained = await loadSurrogate({ dir: nsfw });
    assert.deepEqual(codes(await checkSurrogate(trained, { victim: nsfw, probes: false })), ['victim-weights']);
    trained.dispose();
  });
});
