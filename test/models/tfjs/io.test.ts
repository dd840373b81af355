import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelFileError, loadModel, predictProbs, readModelMeta, saveModel, writeModelMeta } from '../../../src/models/index.js';
import { inputs, setUpBackend, tinyLenet, tinyMlp } from '../helpers.js';

const scratch = mkdtempSync(join(tmpdir(), 'msd-io-'));
before(setUpBackend);
after(() => rmSync(scratch, { recursive: true, force: true }));

function fileError(file: string, pattern: RegExp) {
  return (error: unknown) => error instanceof ModelFileError && error.file === file && pattern.test(error.message);
}

describe('saveModel / loadModel', () => {
  for (const [name, make, width] of [
    ['mlp', tinyMlp, 16],
    ['lenet', tinyLenet, 144],
  ] as const) {
    it(`round-trips a ${name}: same predictions after loading`, async () => {
      const dir = join(scratch, name);
      const model = make(21);
      await saveModel(model, dir);
      const loaded = await loadModel(dir);
      const x = inputs(3, width);
      assert.deepEqual(Array.from(predictProbs(loaded, x, 3)), Array.from(predictProbs(model, x, 3)));
      const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
      assert.deepEqual(json.weightsManifest[0].paths, ['./weights.bin']);
      model.dispose();
      loaded.dispose();
    });
  }

  it('names model.json when the folder or the file is missing', async () => {
    const dir = join(scratch, 'nothing-here');
    await assert.rejects(loadModel(dir), fileError(join(dir, 'model.json'), /file not found/));
  });

  it('names model.json when it is not JSON or not a layers model', async () => {
    const dir = join(scratch, 'bad-json');
    await saveModel(tinyMlp(), dir);
    writeFileSync(join(dir, 'model.json'), '{"modelTopology": ');
    await assert.rejects(loadModel(dir), fileError(join(dir, 'model.json'), /is not valid JSON/));
    writeFileSync(join(dir, 'model.json'), '{"weightsManifest": []}');
    await assert.rejects(loadModel(dir), fileError(join(dir, 'model.json'), /no modelTopology/));
    writeFileSync(join(dir, 'model.json'), JSON.stringify({ modelTopology: { nonsense: true }, weightsManifest: [] }));
    await assert.rejects(loadModel(dir), fileError(join(dir, 'model.json'), /not a loadable layers model/));
  });

  it('names weights.bin when it is missing or truncated', async () => {
    const dir = join(scratch, 'bad-weights');
    await saveModel(tinyMlp(), dir);
    const weights = join(dir, 'weights.bin');
    truncateSync(weights, 10);
    await assert.rejects(loadModel(dir), fileError(weights, /holds 10 bytes of weights but model\.json describes 652/));
    unlinkSync(weights);
    await assert.rejects(loadModel(dir), fileError(weights, /file not found/));
  });
});

describe('model meta', () => {
  it('writes and reads meta.json; absent is undefined, corrupt names the file', async () => {
    const dir = join(scratch, 'meta');
    assert.equal(await readModelMeta(dir), undefined);
    await writeModelMeta(dir, { dataset: 'mnist', arch: 'mlp', testAccuracy: 0.98 });
    assert.deepEqual(await readModelMeta(dir), { dataset: 'mnist', arch: 'mlp', testAccuracy: 0.98 });
    writeFileSync(join(dir, 'meta.json'), '[1, 2]');
    await assert.rejects(readModelMeta(dir), fileError(join(dir, 'meta.json'), /not a valid meta file/));
  });
});
