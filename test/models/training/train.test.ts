import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { ModelInputError, accuracy, predictProbs, tf, trainModel, type TrainProgress } from '../../../src/models/index.js';
import { lossOf } from '../../../src/models/training/train.js';
import { inputs, setUpBackend, tinyLenet, tinyMlp, withoutLeaks } from '../helpers.js';

before(setUpBackend);

/** Three linearly separable classes in 16 dimensions: the class sets the sign pattern of the first inputs. */
function separable(rows: number, salt = 0): { x: Float32Array; labels: Uint8Array } {
  const x = inputs(rows, 16, salt).map((v) => v * 0.3);
  const labels = new Uint8Array(rows);
  for (let r = 0; r < rows; r++) {
    const label = r % 3;
    labels[r] = label;
    x[r * 16 + label] += 1.5;
  }
  return { x, labels };
}

function weightsOf(model: tf.LayersModel): number[] {
  return model.getWeights().flatMap((w) => Array.from(w.dataSync()));
}

for (const engine of ['tfjs', 'onnxruntime'] as const)
  describe(`trainModel on ${engine}`, () => {
    const ranOn = (backend: string) => (engine === 'tfjs' ? assert.equal(backend, tf.getBackend()) : assert.match(backend, /^onnxruntime \(1 thread\)$/));

    it('learns separable data from hard labels, reporting progress, without leaking tensors', async () => {
      const model = tinyMlp(11);
      const { x, labels } = separable(300);
      const test = separable(90, 7);
      const reports: TrainProgress[] = [];
      const result = await withoutLeaks(() =>
        trainModel(
          model,
          { x, rows: 300, labels },
          {
            epochs: 8,
            batchSize: 32,
            learningRate: 0.01,
            validation: { x: test.x, labels: test.labels },
            onProgress: (p) => reports.push(p),
            progressIntervalMs: 0,
            engine,
          },
        ),
      );
      assert.equal(result.history.length, 8);
      assert.ok(result.history[7].loss < result.history[0].loss / 2, `loss ${result.history[0].loss} → ${result.history[7].loss}`);
      assert.ok(accuracy(model, test.x, test.labels, 90) > 0.95);
      assert.ok(result.history[7].validationAccuracy! > 0.95);
      assert.ok(result.imagesPerSecond > 0);
      ranOn(result.backend);
      const epochEnds = reports.filter((p) => p.epochDone);
      assert.equal(epochEnds.length, 8);
      assert.deepEqual(
        epochEnds.map((p) => p.epoch),
        [1, 2, 3, 4, 5, 6, 7, 8],
      );
      assert.ok(
        reports.some((p) => !p.epochDone && p.batch < p.batches),
        'progress within an epoch',
      );
      model.dispose();
    });

    it('learns from soft labels (what a knockoff gets)', async () => {
      const teacher = tinyMlp(12);
      const { x } = separable(240);
      // Sharpen a random teacher's answers a little so there is something to learn.
      const targets = predictProbs(teacher, x, 240);
      const student = tinyMlp(13);
      const agreement = () => {
        const s = predictProbs(student, x, 240);
        let same = 0;
        for (let r = 0; r < 240; r++) {
          const top = (p: Float32Array) => [0, 1, 2].reduce((b, k) => (p[r * 3 + k] > p[r * 3 + b] ? k : b), 0);
          if (top(s) === top(targets)) same++;
        }
        return same / 240;
      };
      const start = agreement();
      await withoutLeaks(() => trainModel(student, { x, rows: 240, targets }, { epochs: 20, batchSize: 32, learningRate: 0.01, engine }));
      assert.ok(agreement() > Math.max(0.9, start), `agreement ${start} → ${agreement()}`);
      [teacher, student].forEach((m) => m.dispose());
    });

    it('is reproducible: the same seed gives the same weights, another seed other weights', async () => {
      const { x, labels } = separable(64);
      const run = async (seed: number) => {
        const model = tinyMlp(1);
        await trainModel(model, { x, rows: 64, labels }, { epochs: 2, batchSize: 16, seed, engine });
        const w = weightsOf(model);
        model.dispose();
        return w;
      };
      const a = await run(5);
      assert.deepEqual(await run(5), a);
      assert.notDeepEqual(await run(6), a);
    });

    it('trains a LeNet on the active backend (its convolution gradients need no missing kernel)', async () => {
      const model = tinyLenet(15);
      const rows = 24;
      const x = inputs(rows, 144, 5);
      const labels = new Uint8Array(rows).map((_, i) => i % 3);
      const lines: string[] = [];
      const before = weightsOf(model);
      const active = tf.getBackend();
      const result = await withoutLeaks(() => trainModel(model, { x, rows, labels }, { epochs: 2, batchSize: 8, log: (l) => lines.push(l), engine }));
      assert.notDeepEqual(weightsOf(model), before);
      if (engine === 'tfjs') assert.equal(result.backend, active);
      else ranOn(result.backend);
      assert.deepEqual(lines, []);
      model.dispose();
    });
  });

describe('trainModel', () => {
  it('with the misinformation loss moves the mass away from the true class', async () => {
    const model = tinyMlp(14);
    const { x, labels } = separable(150);
    const meanTrueProb = () => {
      const p = predictProbs(model, x, 150);
      let sum = 0;
      for (let r = 0; r < 150; r++) sum += p[r * 3 + labels[r]];
      return sum / 150;
    };
    const start = meanTrueProb();
    await withoutLeaks(() => trainModel(model, { x, rows: 150, labels }, { epochs: 10, batchSize: 30, learningRate: 0.01, loss: 'misinformation' }));
    assert.ok(meanTrueProb() < Math.min(0.05, start), `mean p_true ${start} → ${meanTrueProb()}`);
    model.dispose();
  });

  it('rejects malformed data and options with a clear message', async () => {
    const model = tinyMlp();
    const x = inputs(4, 16);
    await assert.rejects(trainModel(model, { x, rows: 4 }, { epochs: 1 }), /either targets \(soft labels\) or labels/);
    await assert.rejects(trainModel(model, { x, rows: 4, labels: new Uint8Array([0, 1, 2, 3]) }, { epochs: 1 }), /label 3 at row 3 is outside 0..2/);
    await assert.rejects(trainModel(model, { x, rows: 5, labels: new Uint8Array(5) }, { epochs: 1 }), ModelInputError);
    await assert.rejects(trainModel(model, { x, rows: 4, targets: new Float32Array(11) }, { epochs: 1 }), /targets hold 11 values/);
    await assert.rejects(trainModel(model, { x, rows: 4, labels: new Uint8Array(4) }, { epochs: 0 }), /epochs must be an integer ≥ 1/);
    model.dispose();
  });
  it('says which engine it cannot use, and why', async () => {
    const model = tinyMlp();
    const x = inputs(4, 16);
    const labels = new Uint8Array([0, 1, 2, 0]);
    await assert.rejects(
      trainModel(model, { x, rows: 4, labels }, { epochs: 1, engine: 'onnxruntime', loss: 'misinformation' }),
      /onnxruntime does not cover the misinformation loss; use engine "tfjs" or "auto"/,
    );
    await assert.rejects(
      trainModel(model, { x, rows: 4, labels }, { epochs: 1, engine: 'gpu' as never }),
      /engine "gpu" is not one of auto, tfjs, onnxruntime/,
    );
    await assert.rejects(trainModel(model, { x, rows: 4, labels }, { epochs: 1, threads: 0 }), /threads must be an integer ≥ 1/);
    // auto: the misinformation loss stays on tfjs rather than failing.
    const result = await trainModel(model, { x, rows: 4, labels }, { epochs: 1, loss: 'misinformation' });
    assert.equal(result.backend, tf.getBackend());
    model.dispose();
  });
});

describe('lossOf', () => {
  const logits = [
    [2, 0, -1],
    [0.5, 0.5, 3],
  ];
  const softmax = (row: number[]) => {
    const e = row.map(Math.exp);
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };

  it('soft-ce is the mean of −Σ t log p', () => {
    const targets = [
      [0.7, 0.2, 0.1],
      [0, 0, 1],
    ];
    const expected = logits.map((row, r) => -softmax(row).reduce((sum, p, k) => sum + targets[r][k] * Math.log(p), 0)).reduce((a, b) => a + b) / 2;
    const value = tf.tidy(() => lossOf('soft-ce', tf.tensor2d(logits), tf.tensor2d(targets), undefined).dataSync()[0]);
    assert.ok(Math.abs(value - expected) < 1e-5, `${value} vs ${expected}`);
  });

  it('misinformation is the mean of −log(1 − p_true), stable when p_true is close to 1', () => {
    const targets = [
      [1, 0, 0],
      [0, 0, 1],
    ];
    const expected = logits.map((row, r) => -Math.log(1 - softmax(row)[targets[r].indexOf(1)])).reduce((a, b) => a + b) / 2;
    const value = tf.tidy(() => lossOf('misinformation', tf.tensor2d(logits), tf.tensor2d(targets), undefined).dataSync()[0]);
    assert.ok(Math.abs(value - expected) < 1e-5, `${value} vs ${expected}`);
    // p_true = 1 − e^-30-ish: finite, about 30.
    const confident = tf.tidy(() => lossOf('misinformation', tf.tensor2d([[30, 0, 0]]), tf.tensor2d([[1, 0, 0]]), undefined).dataSync()[0]);
    assert.ok(Number.isFinite(confident) && Math.abs(confident - (30 - Math.log(2))) < 1e-3, String(confident));
  });
});
