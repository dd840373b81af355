import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  computeDefenseContextAsync,
  loadSurrogate,
  MissingProviderError,
  ModelFileError,
  OnnxSurrogate,
  readOnnxGraph,
  reinitOnnx,
  writeOnnxModel,
  type OnnxModelSpec,
} from '../../../src/models/index.js';
import { ONNX_FIELDS, readFields, repeatedInts } from '../../../src/models/onnx/proto.js';
import { poisonPredictions } from '../../../src/server/index.js';
import { ServingOptionError } from '../../../src/server/errors.js';
import { surrogateContext } from '../../../src/server/surrogate-context.js';

// x [B,4] → Gemm(W1 [4,3], b1) → Relu → Gemm(W2ᵀ: [2,3] with transB) → BatchNormalization → Softmax
const W1 = Float32Array.from([0.5, -1, 0.25, 2, 0, -0.5, 1, 1, -1.5, 0.3, 0.7, -0.2]);
const B1 = Float32Array.from([0.1, -0.2, 0.3]);
const W2 = Float32Array.from([1, -0.5, 0.25, -1, 0.75, 0.5]); // [2, 3], used transposed
const BN = { scale: [1.5, 0.5], bias: [0.1, -0.1], mean: [0.2, -0.3], variance: [2, 0.5] };

function spec(): OnnxModelSpec {
  return {
    inputs: [{ name: 'x', shape: ['batch', 4] }],
    outputs: [{ name: 'probs', shape: ['batch', 2] }],
    initializers: [
      { name: 'W1', dims: [4, 3], data: W1 },
      { name: 'b1', dims: [3], data: B1 },
      { name: 'W2', dims: [2, 3], data: W2 },
      { name: 'bn_scale', dims: [2], data: Float32Array.from(BN.scale) },
      { name: 'bn_bias', dims: [2], data: Float32Array.from(BN.bias) },
      { name: 'bn_mean', dims: [2], data: Float32Array.from(BN.mean) },
      { name: 'bn_var', dims: [2], data: Float32Array.from(BN.variance) },
      { name: 'flat_shape', dims: [2], data: BigInt64Array.from([-1n, 2n]) },
    ],
    nodes: [
      { op: 'Gemm', inputs: ['x', 'W1', 'b1'], outputs: ['h'] },
      { op: 'Relu', inputs: ['h'], outputs: ['r'] },
      { op: 'Gemm', inputs: ['r', 'W2'], outputs: ['z'], attributes: { transB: 1, alpha: { f: 1 } } },
      { op: 'BatchNormalization', inputs: ['z', 'bn_scale', 'bn_bias', 'bn_mean', 'bn_var'], outputs: ['n'], attributes: { epsilon: { f: 1e-5 } } },
      { op: 'Reshape', inputs: ['n', 'flat_shape'], outputs: ['flat'] },
      { op: 'Softmax', inputs: ['flat'], outputs: ['probs'], attributes: { axis: 1 } },
    ],
  };
}

function byHand(x: Float32Array, rows: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < rows; r++) {
    const h = [0, 1, 2].map((j) => Math.max(0, B1[j] + [0, 1, 2, 3].reduce((s, i) => s + x[r * 4 + i] * W1[i * 3 + j], 0)));
    const z = [0, 1].map((k) => h.reduce((s, v, j) => s + v * W2[k * 3 + j], 0));
    const n = z.map((v, k) => ((v - BN.mean[k]) / Math.sqrt(BN.variance[k] + 1e-5)) * BN.scale[k] + BN.bias[k]);
    const e = n.map((v) => Math.exp(v - Math.max(...n)));
    const total = e[0] + e[1];
    out.push(e[0] / total, e[1] / total);
  }
  return out;
}

/** Initializer name → float values, read back from the encoded model. */
function initializerValues(bytes: Uint8Array): Map<string, Float32Array> {
  const graph = readFields(bytes).find((f) => f.field === ONNX_FIELDS.model.graph)!;
  const out = new Map<string, Float32Array>();
  for (const field of readFields(graph.payload!).filter((f) => f.field === ONNX_FIELDS.graph.initializer)) {
    const t = readFields(field.payload!);
    const name = new TextDecoder().decode(t.find((f) => f.field === ONNX_FIELDS.tensor.name)!.payload);
    const type = Number(t.find((f) => f.field === ONNX_FIELDS.tensor.dataType)!.varint);
    const raw = t.find((f) => f.field === ONNX_FIELDS.tensor.rawData)!.payload!;
    const dims = repeatedInts(t, ONNX_FIELDS.tensor.dims).map(Number);
    if (type === 1)
      out.set(
        name,
        new Float32Array(
          raw.slice().buffer,
          0,
          dims.reduce((a, b) => a * b, 1),
        ),
      );
  }
  return out;
}

describe('ONNX surrogates (onnxruntime-node) on a model written by onnx-writer', () => {
  let dir: string;
  let file: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-onnx-'));
    file = join(dir, 'tiny.onnx');
    await writeFile(file, writeOnnxModel(spec()));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('reads the graph: the fed input (initializers excluded), its shape, the output', () => {
    const info = readOnnxGraph(writeOnnxModel(spec()));
    assert.deepEqual(info.inputs, [{ name: 'x', shape: [null, 4] }]);
    assert.deepEqual(
      info.outputs.map((o) => o.name),
      ['probs'],
    );
    assert.equal(info.initializers.length, 8);
  });

  it('answers what the graph computes by hand, in chunks; forward-only', async () => {
    const surrogate = await loadSurrogate({ onnx: file, chunkRows: 2 });
    assert.ok(surrogate instanceof OnnxSurrogate);
    assert.deepEqual([surrogate.classes, surrogate.differentiable, ...surrogate.inputShape], [2, false, 4]);
    const rows = 5;
    const x = Float32Array.from({ length: rows * 4 }, (_, i) => Math.sin(i * 1.7) * 2);
    const probs = await surrogate.probsAsync(x, rows);
    byHand(x, rows).forEach((v, i) => assert.ok(Math.abs(probs.data[i] - v) < 1e-5, `entry ${i}: ${probs.data[i]} vs ${v}`));
    await assert.rejects(surrogate.probsAsync(x.subarray(1), rows), /inputs hold 19 values/);
    await assert.rejects(
      computeDefenseContextAsync(['surrogateGram'], x, rows, { surrogate }),
      (e: unknown) => e instanceof MissingProviderError && /jacobian=last-layer/.test(e.message),
    );
    surrogate.dispose();
  });

  it('applies a softmax to a logits output (detected: rows that are not probabilities)', async () => {
    const logits = spec();
    const nodes = logits.nodes.slice(0, -1);
    const surrogate = await loadSurrogate({ onnx: writeOnnxModel({ ...logits, nodes, outputs: [{ name: 'flat', shape: ['batch', 2] }] }) });
    const x = Float32Array.from([1, 2, 3, 4, -1, 0.5, 2, -3]);
    const probs = await surrogate.probsAsync(x, 2);
    byHand(x, 2).forEach((v, i) => assert.ok(Math.abs(probs.data[i] - v) < 1e-5));
    surrogate.dispose();
  });

  it('re-initialises every float initializer from a seed: deterministic, fan-in scaled, batch norm reset, int64 kept', async () => {
    const bytes = writeOnnxModel(spec());
    const original = initializerValues(bytes);
    const a = initializerValues(reinitOnnx(bytes, 5));
    const b = initializerValues(reinitOnnx(bytes, 5));
    const c = initializerValues(reinitOnnx(bytes, 6));
    assert.deepEqual([...a.keys()], [...original.keys()]);
    for (const [name, values] of original) {
      assert.notDeepEqual(a.get(name), values, `${name} changed`);
      assert.deepEqual(a.get(name), b.get(name), `${name}: same seed, same values`);
    }
    for (const name of ['W1', 'b1', 'W2']) assert.notDeepEqual(a.get(name), c.get(name), `${name}: another seed`);
    // Fan-in: W1 [4, 3] (Gemm, no transB) sees 4 inputs, W2 [2, 3] (transB) sees 3; biases ±1/√fan_in.
    assert.ok(a.get('W1')!.every((v) => Math.abs(v) <= Math.sqrt(6 / 4)));
    assert.ok(
      a.get('W1')!.some((v) => Math.abs(v) > 1 / Math.sqrt(4)),
      'weights use the He bound, wider than the bias bound',
    );
    assert.ok(a.get('W2')!.every((v) => Math.abs(v) <= Math.sqrt(6 / 3)));
    assert.ok(a.get('b1')!.every((v) => Math.abs(v) <= 1 / Math.sqrt(4)));
    assert.deepEqual([...a.get('bn_scale')!, ...a.get('bn_bias')!, ...a.get('bn_mean')!, ...a.get('bn_var')!], [1, 1, 0, 0, 0, 0, 1, 1]);
    // The re-initialised model still runs (the int64 shape of the Reshape kept) and answers differently.
    const fresh = await loadSurrogate({ onnx: bytes, reinit: 5 });
    const trained = await loadSurrogate({ onnx: bytes });
    const x = Float32Array.from([1, 2, 3, 4]);
    const [p, q] = [await fresh.probsAsync(x, 1), await trained.probsAsync(x, 1)];
    assert.notDeepEqual(p.data, q.data);
    assert.ok(Math.abs(p.data[0] + p.data[1] - 1) < 1e-6);
    fresh.dispose();
    trained.dispose();
  });

  it('names the file when it is missing or not ONNX', async () => {
    await assert.rejects(
      loadSurrogate({ onnx: join(dir, 'absent.onnx') }),
      (e: unknown) => e instanceof ModelFileError && /absent\.onnx: file not found/.test(e.message),
    );
    const junk = join(dir, 'junk.onnx');
    await writeFile(junk, 'not a protobuf at all');
    await assert.rejects(loadSurrogate({ dir: junk }), (e: unknown) => e instanceof ModelFileError && e.message.startsWith(junk));
  });

  it('is refused with jacobian=full when the middleware is built, saying what to use instead', async () => {
    const surrogate = await loadSurrogate({ onnx: file });
    const context = surrogateContext({ surrogate });
    assert.throws(
      () => poisonPredictions({ defense: 'mad:eps=0.5,jacobian=full', context }),
      (e: unknown) => e instanceof ServingOptionError && /jacobian=last-layer/.test(e.message) && /forward-only/.test(e.message),
    );
    assert.throws(() => surrogateContext({ surrogate }, { needs: ['surrogateGram'] }), ServingOptionError);
    // Last-layer MAD is fine.
    assert.doesNotThrow(() => poisonPredictions({ defense: 'mad:eps=0.5', context }));
    surrogate.dispose();
  });
});
