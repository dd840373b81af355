import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseDefense } from '../../../src/defenses/index.js';
import {
  checkSurrogate,
  computeDefenseContextAsync,
  graphWeightRoles,
  loadSurrogate,
  loadTfjsModel,
  readModelDir,
  reinitGraphArtifacts,
  type TfjsSurrogate,
  tf,
} from '../../../src/models/index.js';
import { EXPECTED_ROLES, GRAPH_CLASSES, GRAPH_SHAPE, writeGraphModel, type WrittenGraphModel } from '../graph-fixture.js';
import { inputs, setUpBackend, withoutLeaks } from '../helpers.js';

before(setUpBackend);

const WIDTH = GRAPH_SHAPE.reduce((a, b) => a * b, 1);
const ROWS = 8;
/** Eight 8×8×3 images in [0, 1]: each a colour of its own with some noise on it. */
const IMAGES = (() => {
  const noise = inputs(ROWS, WIDTH, 5);
  const colours = inputs(ROWS, 3, 11).map((v) => (v + 1) / 2);
  return noise.map((v, i) => Math.min(1, Math.max(0, colours[Math.floor(i / WIDTH) * 3 + (i % 3)] + 0.15 * v)));
})();

/** A graph surrogate's constants by name, as the built model holds them. */
function weightsOf(surrogate: unknown): Map<string, Float32Array> {
  const model = (surrogate as TfjsSurrogate).model as tf.GraphModel;
  assert.ok(model instanceof tf.GraphModel);
  return new Map(Object.entries(model.weights).map(([name, [t]]) => [name, Float32Array.from(t.dataSync() as Float32Array)]));
}

/** Per row: the classes other than the top one that MAD's answer gave mass to (its target, as seen in the answer). */
function gainedClasses(answers: { data: Float32Array }, victim: { data: Float32Array }): string[] {
  const out: string[] = [];
  for (let r = 0; r < ROWS; r++) {
    const y = victim.data.subarray(r * GRAPH_CLASSES, (r + 1) * GRAPH_CLASSES);
    const top = y.indexOf(Math.max(...y));
    const gained = [...Array(GRAPH_CLASSES).keys()].filter((k) => k !== top && answers.data[r * GRAPH_CLASSES + k] > y[k] + 1e-6);
    out.push(gained.join(','));
  }
  return out;
}

describe('graph model (tfjs-converter format) re-initialised from a seed', () => {
  let dir: string;
  let model: WrittenGraphModel;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-graph-reinit-'));
    model = await writeGraphModel(dir);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('recognises each constant’s role from the nodes consuming it', async () => {
    const read = await readModelDir(model.json);
    assert.equal(read.kind, 'graph');
    const roles = graphWeightRoles(read.artifacts.modelTopology, read.artifacts.weightSpecs!);
    // int32 constants (the Mean's axes) have no role: they are kept byte for byte.
    assert.deepEqual([...roles.keys()].sort(), Object.keys(EXPECTED_ROLES).sort());
    for (const [name, expected] of Object.entries(EXPECTED_ROLES)) {
      const { why: _, ...role } = roles.get(name)!;
      assert.deepEqual(role, expected, name);
    }
  });

  it('re-draws every float weight (quantized ones as float32), fan-in scaled; keeps int32, preprocessing and scalar constants; same seed, same weights', async () => {
    await withoutLeaks(async () => {
      const trained = await loadSurrogate({ path: model.json });
      const a = await loadSurrogate({ path: model.json, reinit: 3 });
      const b = await loadSurrogate({ path: model.json, reinit: 3 });
      const c = await loadSurrogate({ path: model.json, reinit: 4 });
      const [wt, wa, wb, wc] = [trained, a, b, c].map(weightsOf);
      assert.deepEqual([...wa.keys()].sort(), [...wt.keys()].sort());
      assert.deepEqual(wa.get('axes'), wt.get('axes'), 'int32 axes kept');
      for (const [name, role] of Object.entries(EXPECTED_ROLES)) {
        const values = wa.get(name)!;
        assert.deepEqual(values, wb.get(name), `${name}: same seed, same values`);
        if (role.kind === 'keep') {
          assert.deepEqual(values, wt.get(name), `${name}: kept`);
          continue;
        }
        assert.notDeepEqual(values, wt.get(name), `${name}: changed`);
        if (role.kind === 'constant') {
          assert.ok(
            values.every((v) => v === role.value),
            `${name}: all ${role.value}`,
          );
          continue;
        }
        assert.notDeepEqual(values, wc.get(name), `${name}: another seed, other values`);
        const bound = role.kind === 'weight' ? Math.sqrt(6 / role.fanIn) : 1 / Math.sqrt(role.fanIn);
        const largest = Math.max(...Array.from(values, Math.abs));
        assert.ok(largest <= bound && largest > bound / 2, `${name}: |values| up to ${largest}, bound ${bound}`);
      }
      // The quantized weights became plain float32 in the re-initialised manifest.
      const read = await readModelDir(model.json);
      const specs = reinitGraphArtifacts(read.artifacts, 3).weightSpecs!;
      assert.ok(
        read.artifacts.weightSpecs!.some((s) => s.quantization?.dtype === 'uint8') &&
          read.artifacts.weightSpecs!.some((s) => s.quantization?.dtype === 'float16'),
      );
      for (const spec of specs)
        if (spec.dtype === 'float32' && EXPECTED_ROLES[spec.name]?.kind !== 'keep') assert.equal(spec.quantization, undefined, spec.name);
      assert.ok(a.differentiable === false && a.classes === GRAPH_CLASSES);
      for (const s of [trained, a, b, c]) s.dispose();
    });
  });

  it('re-initialises a GraphModel object as its files, and in a worker thread', async () => {
    const { model: graph } = await loadTfjsModel(model.json);
    const fromObject = await loadSurrogate({ model: graph, reinit: 3 });
    const fromFile = await loadSurrogate({ path: model.json, reinit: 3 });
    const threaded = await loadSurrogate({ path: model.json, reinit: 3, thread: true });
    try {
      const expected = Array.from((await fromFile.probsAsync(IMAGES, ROWS)).data);
      assert.deepEqual(Array.from((await fromObject.probsAsync(IMAGES, ROWS)).data), expected);
      const inThread = Array.from((await threaded.probsAsync(IMAGES, ROWS)).data);
      inThread.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-5, `entry ${i}`));
    } finally {
      for (const s of [fromObject, fromFile, threaded]) s.dispose();
      graph.dispose();
    }
  });

  it('steers mad-argmax: answers differ from image to image, where the victim as its own surrogate gives every image the same fallback', async () => {
    const victim = await loadSurrogate({ path: model.json });
    const fresh = await loadSurrogate({ path: model.json, reinit: 3 });
    try {
      const answers = await victim.probsAsync(IMAGES, ROWS);
      const defense = parseDefense('mad-argmax:eps=0.8');
      const poisoned = (surrogate: typeof victim) =>
        computeDefenseContextAsync(defense.needs, IMAGES, ROWS, { surrogate }).then((ctx) => defense.apply(answers, ctx));
      // The victim as surrogate: p = y, the geometry is degenerate, every answer gets the fallback
      // (mass spread over every other class) — and the start-up check says so.
      const degenerate = gainedClasses(await poisoned(victim), answers);
      assert.ok(
        degenerate.every((gained) => gained.split(',').length === GRAPH_CLASSES - 1),
        degenerate.join(' | '),
      );
      assert.deepEqual(
        (await checkSurrogate(victim, { victim: model.json })).map((w) => w.code),
        ['victim-weights'],
      );
      // Re-initialised: the targets follow the images.
      const steered = gainedClasses(await poisoned(fresh), answers);
      assert.ok(new Set(steered).size >= 2, `targets per image: ${steered.join(' | ')}`);
      assert.deepEqual(await checkSurrogate(fresh, { victim: model.json }), []);
      assert.deepEqual(await checkSurrogate(fresh), []);
    } finally {
      victim.dispose();
      fresh.dispose();
    }
  });
});
