import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { checkpointRecorder, createModel, initBackend, tf, trainModel } from '../../../src/models/index.js';
import { runDetectionEvaluation } from '../../../src/eval/detection/run.js';
import { writeDetectionReport } from '../../../src/eval/report/detection-section.js';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AttackerStream } from '../../../src/eval/detection/streams.js';
import { seededRandom } from '../../../src/eval/random.js';

const FEATURES = 16;
const CLASSES = 3;
const CENTERS = [0, 1, 2].map((c) => Float32Array.from({ length: FEATURES }, (_, i) => (i % 3 === c ? 0.85 : 0.15)));

/** Blobs around three corners: the victim's in-distribution data. */
function blobs(rows: number, seed: number) {
  const random = seededRandom(seed);
  const x = new Float32Array(rows * FEATURES);
  const labels = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    labels[r] = r % CLASSES;
    for (let i = 0; i < FEATURES; i++) x[r * FEATURES + i] = Math.min(1, Math.max(0, CENTERS[labels[r]][i] + (random() - 0.5) * 0.2));
  }
  return { x, labels, rows };
}

/** An obviously out-of-distribution stream: points halfway between two class centres, where the victim is unsure. */
const betweenClasses: AttackerStream = {
  name: 'between-classes',
  family: 'other',
  async run(client, requestRows) {
    const rows = 150;
    const x = new Float32Array(rows * FEATURES);
    for (let r = 0; r < rows; r++)
      for (let i = 0; i < FEATURES; i++) x[r * FEATURES + i] = (CENTERS[r % 3][i] + CENTERS[(r + 1) % 3][i]) / 2 + ((r * 7 + i) % 5) * 0.001;
    const answers = new Float32Array(rows * CLASSES);
    for (let done = 0; done < rows; done += requestRows) {
      const n = Math.min(requestRows, rows - done);
      const got = await client.infer(x.subarray(done * FEATURES, (done + n) * FEATURES), n, FEATURES);
      answers.set(got.data, done * CLASSES);
    }
    return { x, answers: { rows, cols: CLASSES, data: answers }, indices: Int32Array.from({ length: rows }, (_, i) => i) };
  },
};

describe('detection evaluation (synthetic, small)', () => {
  before(() => initBackend({ log: () => {} }));

  it('flags an obviously OOD stream, leaves in-distribution benign clients alone, and reports every detector', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'msd-detection-report-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const tensors = tf.memory().numTensors;
    const train = blobs(600, 1);
    const victim = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 2, hidden: [16] });
    const recorder = checkpointRecorder(victim, 11);
    await trainModel(victim, train, { epochs: 8, batchSize: 32, learningRate: 0.01, seed: 3, onStep: recorder.onStep });
    const checkpoints = recorder.checkpoints.map((weights) => {
      const m = createModel({ arch: 'mlp', inputShape: [FEATURES], classes: CLASSES, seed: 2, hidden: [16] });
      const tensors = weights.map((w, i) => tf.tensor(w, victim.getWeights()[i].shape));
      m.setWeights(tensors);
      tf.dispose(tensors);
      return m;
    });
    try {
      const report = await runDetectionEvaluation({
        victim,
        checkpoints,
        victimTest: blobs(400, 4),
        features: FEATURES,
        classes: CLASSES,
        streams: [betweenClasses],
        knockoff: { arch: 'mlp', epochs: 2, batchSize: 32, learningRate: 0.01 },
        seed: 5,
        providers: {},
        benign: { clients: 30, minQueries: 20, maxQueries: 40 },
      });
      assert.deepEqual(report.detectors, ['ood', 'prada', 'hoda', 'budget']);
      assert.deepEqual(report.ladder, ['reverse-sigmoid', 'argmax'], 'no surrogate: a ladder without MAD');
      assert.equal(report.hoda.enabled, true);
      assert.equal(report.hoda.checkpoints, 11);
      const [attacker] = report.attackers;
      assert.equal(attacker.queries, 150);
      assert.equal(attacker.firstFlag.ood, 50, 'OOD flags once its 50 queries are in, all of them unsure');
      assert.equal(attacker.flaggedAt, 50);
      assert.equal(attacker.escalatedAt, 50, 'the policy escalates at the flag');
      assert.equal(attacker.worstAction, 'escalate');
      for (const d of report.detectors) assert.ok(d in attacker.firstFlag);
      assert.ok(attacker.knockoffAccuracy.clean >= 0 && attacker.knockoffAccuracy.clean <= 1);
      assert.equal(report.benign.clients, 30);
      assert.ok(report.benign.queries.min >= 20 && report.benign.queries.max <= 40);
      assert.equal(report.benign.flagged.any, 0, JSON.stringify(report.benign));
      assert.equal(report.benign.escalated, 0);
      assert.equal(report.benign.falsePositiveRate.ood, 0);
      assert.equal(report.targets.met, false, 'fewer than 100 benign clients cannot meet the target');
      await writeFile(join(dir, 'report.html'), '<html><body><h1>grid</h1></body></html>');
      const files = await writeDetectionReport(dir, report);
      await writeDetectionReport(dir, report);
      const page = await readFile(join(dir, 'report.html'), 'utf8');
      assert.equal(page.split('<section id="detection">').length, 2, 'one section, replaced on a rerun');
      assert.match(page, /<h1>grid<\/h1>[\s\S]*between-classes<\/td><td>150<\/td><td>50<\/td>[\s\S]*<\/body>/);
      assert.deepEqual(JSON.parse(await readFile(files.json, 'utf8')).attackers[0].firstFlag, attacker.firstFlag);
    } finally {
      victim.dispose();
      for (const m of checkpoints) m.dispose();
    }
    assert.equal(tf.memory().numTensors, tensors);
  });
});
