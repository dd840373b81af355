import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadSurrogate, ModelFileError, modelPathKind, OnnxSurrogate, readModelDir, saveModel, writeOnnxModel } from '../../../src/models/index.js';
import { writeGraphModel } from '../graph-fixture.js';
import { inputs, setUpBackend, tinyMlp } from '../helpers.js';

before(setUpBackend);

describe('a surrogate by any model path: <name>.json, its directory, an ONNX file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-model-path-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('loads a layers model from its JSON file by any name (weights relative to it), with path or dir', async () => {
    const model = tinyMlp(3);
    const saved = join(dir, 'layers');
    await saveModel(model, saved);
    await rename(join(saved, 'model.json'), join(saved, 'victim.json'));
    const x = inputs(3, 16, 4);
    const original = await loadSurrogate({ model });
    const expected = Array.from((await original.probsAsync(x, 3)).data);
    original.dispose();
    for (const options of [{ path: join(saved, 'victim.json') }, { dir: join(saved, 'victim.json') }, { path: saved }]) {
      const surrogate = await loadSurrogate(options);
      assert.deepEqual(Array.from((await surrogate.probsAsync(x, 3)).data), expected, JSON.stringify(options));
      surrogate.dispose();
    }
    assert.equal((await readModelDir(join(saved, 'victim.json'))).file, join(saved, 'victim.json'));
  });

  it('loads and re-initialises a converted graph model from <name>.json, or its directory when it is the only JSON there', async () => {
    const graphDir = join(dir, 'graph');
    await mkdir(graphDir);
    const { json } = await writeGraphModel(graphDir, 'mobilenet_v2_140_224');
    assert.equal(await modelPathKind(json), 'tfjs');
    for (const path of [json, graphDir]) {
      const surrogate = await loadSurrogate({ path, reinit: 2 });
      assert.deepEqual([surrogate.classes, ...surrogate.inputShape], [4, 8, 8, 3]);
      surrogate.dispose();
    }
    await copyFile(json, join(graphDir, 'other.json'));
    await assert.rejects(
      loadSurrogate({ path: graphDir }),
      (e: unknown) =>
        e instanceof ModelFileError && /several JSON files \(mobilenet_v2_140_224.json, other.json\): give the model's JSON file itself/.test(e.message),
    );
  });

  it('reads an ONNX file by its extension or, under another name, by its first bytes', async () => {
    const bytes = writeOnnxModel({
      inputs: [{ name: 'x', shape: ['n', 2] }],
      outputs: [{ name: 'y', shape: ['n', 3] }],
      initializers: [{ name: 'W', dims: [2, 3], data: Float32Array.from([1, -1, 0.5, 0.2, 0.3, -0.4]) }],
      nodes: [
        { op: 'MatMul', inputs: ['x', 'W'], outputs: ['z'] },
        { op: 'Softmax', inputs: ['z'], outputs: ['y'], attributes: { axis: 1 } },
      ],
    });
    const named = join(dir, 'model.bin');
    await writeFile(named, bytes);
    assert.equal(await modelPathKind(named), 'onnx');
    const surrogate = await loadSurrogate({ path: named, reinit: 1 });
    assert.ok(surrogate instanceof OnnxSurrogate);
    surrogate.dispose();
  });

  it('names what it wants when the path is missing or holds neither', async () => {
    await assert.rejects(
      loadSurrogate({ path: join(dir, 'nowhere') }),
      (e: unknown) => e instanceof ModelFileError && /nowhere: not found \(give a TF.js model’s JSON file or its directory, or an ONNX file\)/.test(e.message),
    );
    const junk = join(dir, 'junk.dat');
    await writeFile(junk, Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    await assert.rejects(loadSurrogate({ path: junk }), /junk.dat: is neither a TF.js model .* nor an ONNX model/);
    await assert.rejects(loadSurrogate({ path: junk, dir: junk }), /exactly one of dir, model or onnx/);
  });
});
