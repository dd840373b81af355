import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { initBackend, tf } from '../../../src/models/index.js';
import { runDetectionEvaluation } from '../../../src/eval/detection/run.js';
import { writeDetectionReport } from '../../../src/eval/detection/detection-section.js';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { betweenClasses, blobs, blobVictim, CLASSES, FEATURES } from '../helpers/blob-victim.js';

/** An obviously out-of-distribution stream: 150 points halfway between two class centres, where the victim is unsure. */
const between = betweenClasses(150, (r, i) => ((r * 7 + i) % 5) * 0.001);

describe('detection evaluation (synthetic, small)', () => {
  before(() => initBackend({ log: () => {} }));

  it('flags an obviously OOD stream, leaves in-distribution benign clients alone, and reports every detector', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'msd-detection-report-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const tensors = tf.memory().numTensors;
    const { victim, checkpoints, dispose } = await blobVictim();
    try {
      const report = await runDetectionEvaluation({
        victim,
        checkpoints,
        victimTest: blobs(400, 4),
        features: FEATURES,
        classes: CLASSES,
        streams: [between],
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
      dispose();
    }
    assert.equal(tf.memory().numTensors, tensors);
  });
});
