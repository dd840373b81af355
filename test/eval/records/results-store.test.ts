import assert from 'node:assert/strict';
import { appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { scratchDir } from '../../helpers/scratch.js';
import type { RunRecord } from '../../../src/eval/records/run-record.js';
import { sampleRecord } from '../helpers/sample-record.js';
import { ResultsStore, RUNS_FILE } from '../../../src/eval/records/results-store.js';

describe('results store', () => {
  it('appends one line per run and reads them back after a restart', async () => {
    const dir = await scratchDir('msd-store-');
    const store = await ResultsStore.open(dir);
    assert.equal(store.all().length, 0);
    await store.append(sampleRecord('a'));
    await store.append(sampleRecord('b', { budget: 2000 }));
    assert.ok(store.has('a'));
    const lines = (await readFile(join(dir, RUNS_FILE), 'utf8')).trim().split('\n');
    assert.equal(lines.length, 2);
    const reopened = await ResultsStore.open(dir);
    assert.deepEqual(
      reopened.all().map((r) => r.key),
      ['a', 'b'],
    );
    assert.equal(reopened.get('b')?.budget, 2000);
  });

  it('skips a line cut short by a crash and keeps appending on a fresh line', async () => {
    const dir = await scratchDir('msd-store-');
    const store = await ResultsStore.open(dir);
    await store.append(sampleRecord('a'));
    await appendFile(join(dir, RUNS_FILE), JSON.stringify(sampleRecord('cut')).slice(0, 40));
    const reopened = await ResultsStore.open(dir);
    assert.deepEqual(reopened.skippedLines, [2]);
    assert.deepEqual(
      reopened.all().map((r) => r.key),
      ['a'],
    );
    await reopened.append(sampleRecord('c'));
    const again = await ResultsStore.open(dir);
    assert.deepEqual(
      again.all().map((r) => r.key),
      ['a', 'c'],
    );
  });

  it('refuses an incomplete record', async () => {
    const store = await ResultsStore.open(await scratchDir('msd-store-'));
    await assert.rejects(store.append({ key: 'x' } as unknown as RunRecord), /not a complete run record/);
  });
});
