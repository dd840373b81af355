import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '../../../src/models/index.js';
import { runPopulationEvaluation } from '../../../src/eval/detection/population-run.js';
import { writePopulationReport } from '../../../src/eval/detection/population-section.js';
import { parseScenarios } from '../../../src/eval/detection/sybil.js';
import { seededRandom } from '../../../src/eval/random.js';
import { betweenClasses, blobs, blobVictim, CLASSES, FEATURES } from '../helpers/blob-victim.js';

/** A thief querying between two class centres, where the victim is unsure (out of distribution). */
function thief(rows: number) {
  const random = seededRandom(rows);
  return betweenClasses(rows, () => (random() - 0.5) * 0.1);
}

describe('thieves with many identities (synthetic, small)', () => {
  before(() => initBackend({ log: () => {} }));

  it('spreads a thief over identities, catches it above the client, and measures what it and the benign clients got', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'msd-population-report-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const { victim, checkpoints, dispose } = await blobVictim();
    const lines: string[] = [];
    try {
      const report = await runPopulationEvaluation({
        victim,
        checkpoints,
        victimTest: blobs(2000, 4),
        cover: blobs(2000, 5),
        features: FEATURES,
        classes: CLASSES,
        scenarios: parseScenarios('benign,random:30,random:30:cohort,random:30:perclient,random:30:dilute=0.5'),
        streamFor: () => thief(300),
        thiefQueries: 300,
        knockoff: { arch: 'mlp', epochs: 1, batchSize: 32, learningRate: 0.01 },
        seed: 5,
        providers: {},
        benign: { clients: 30, minQueries: 20, maxQueries: 40 },
        population: { minQueries: 50, youngQueries: 50 },
        spanMs: 1_800_000,
        log: (line) => lines.push(line),
      });
      assert.equal(report.thieves.length, 5);
      const benignOnly = report.thieves.shift()!;
      assert.equal(benignOnly.attacker, 'none');
      assert.equal(benignOnly.knockoffAccuracy, undefined);
      assert.deepEqual(benignOnly.benign.alarmStarts, { all: 0, young: 0 }, 'benign traffic alone raises no population alarm');
      assert.equal(benignOnly.benign.changed, 0, 'and its answers are untouched');
      assert.equal(benignOnly.target?.met, true);
      assert.equal(report.probationTier, 'argmax', 'no surrogate: the probation tier is argmax (top-1 kept)');
      for (const thief of report.thieves) {
        assert.equal(thief.attackQueries, 300);
        assert.equal(thief.answers.clean + thief.answers.defended + thief.answers.refused, 300, thief.scenario);
        assert.ok(thief.answers.cleanBeforeFirstAction <= thief.answers.clean);
        assert.equal(thief.benign.clients, 30);
        assert.equal(thief.benign.refusedClients, 0, `${thief.scenario}: no benign client refused`);
        assert.ok(thief.benign.top1ChangedShare <= 0.01, `${thief.scenario}: ${JSON.stringify(thief.benign)}`);
        assert.ok(thief.knockoffAccuracy!.undefended >= 0 && thief.knockoffAccuracy!.withDetection <= 1);
      }
      const [sybil, cohort, perClient, diluted] = report.thieves;
      // 30 identities × 10 queries: no identity reaches OOD's 50 queries; the young population does.
      assert.equal(sybil.firstAction['client:ood'], undefined);
      assert.ok(sybil.firstAction['population:young'] !== undefined, JSON.stringify(sybil.firstAction));
      assert.ok(sybil.populationFlaggedBy.young.length > 0);
      assert.ok(sybil.answers.clean < 150, `clean ${sybil.answers.clean}`);
      assert.ok(cohort.firstAction['cohort:ood'] !== undefined, JSON.stringify(cohort.firstAction));
      assert.ok(cohort.answers.clean <= 60, `one cohort: caught at its 50th query or so (clean ${cohort.answers.clean})`);
      assert.equal(Object.keys(perClient.firstAction).filter((d) => !d.startsWith('client:')).length, 0, 'per-client only');
      assert.ok(perClient.answers.clean > sybil.answers.clean, 'detection above the client saves answers');
      assert.equal(diluted.coverQueries, 300, 'half of every identity’s queries are cover');
      assert.equal(diluted.detected, true);
      assert.ok(lines.some((l) => l.startsWith('random:30: 300 queries')));
      if (process.env.MSD_TEST_VERBOSE) console.log(lines.join('\n'));
      await writeFile(join(dir, 'report.html'), '<html><body><h1>grid</h1></body></html>');
      const files = await writePopulationReport(dir, report);
      await writePopulationReport(dir, report);
      const page = await readFile(join(dir, 'report.html'), 'utf8');
      assert.equal(page.split('<section id="population">').length, 2, 'one section, replaced on a rerun');
      assert.match(page, /random:30:cohort/);
      assert.equal(JSON.parse(await readFile(files.json, 'utf8')).thieves.length, 4);
      assert.ok(benignOnly.benign.answers > 0);
    } finally {
      dispose();
    }
  });

  it('parses scenario specs and refuses bad ones', () => {
    assert.deepEqual(parseScenarios('adaptive:100:cohort:dilute=0.8:slow')[0], {
      name: 'adaptive:100:cohort:dilute=0.8:slow',
      policy: 'adaptive',
      identities: 100,
      cohort: true,
      dilution: 0.8,
      slow: true,
      perClient: false,
    });
    assert.equal(parseScenarios('target').length, 4);
    // The shorthands mix with specs (the docs' command does), each scenario once.
    assert.deepEqual(
      parseScenarios('target,random:200:perclient,random:200').map((s) => s.name),
      ['benign', 'random:200', 'random:200:cohort', 'random:200:dilute=0.5', 'random:200:perclient'],
    );
    assert.equal(parseScenarios('benign')[0].policy, 'none');
    assert.ok(parseScenarios('all').length >= 15);
    assert.throws(() => parseScenarios('nope:10'), /unknown attacker/);
    assert.throws(() => parseScenarios('random:0'), /identities/);
    assert.throws(() => parseScenarios('random:10:dilute=1'), /0 ≤ R < 1/);
    assert.throws(() => parseScenarios('random:10:fast'), /unknown modifier/);
  });
});
