/** The queue's pure parts: the Redis address, the grid id and definition, the run of a job, the status lines. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PRESET_NAMES, presetConfig, validateConfig } from '../../../src/eval/config.js';
import { fingerprintDifferences } from '../../../src/eval/queue/fingerprint.js';
import { configFromDefinition, gridDefinition, gridId, jobData, runOfJob, untransportable } from '../../../src/eval/queue/grid.js';
import { parseQueueUrl, QueueUrlError } from '../../../src/eval/queue/redis-url.js';
import { EtaEstimator, formatDuration, parseBeats, statusLines, type WorkerBeat } from '../../../src/eval/queue/status.js';
import { planRuns, runKey } from '../../../src/eval/run/run-key.js';
import { runTimeoutFlag } from '../../../src/cli/flags/queue-flags.js';

describe('queue address', () => {
  it('parses host, port, database, user and password, and hides the password', () => {
    const plain = parseQueueUrl('redis://queue.example:6390/2');
    assert.deepEqual(plain.options, { host: 'queue.example', port: 6390, db: 2 });
    assert.equal(plain.tls, false);
    const secret = parseQueueUrl('redis://:s3cr%40t@10.0.0.5');
    assert.deepEqual(secret.options, { host: '10.0.0.5', port: 6379, db: 0, password: 's3cr@t' });
    assert.equal(secret.redacted, 'redis://:***@10.0.0.5');
    assert.ok(!secret.redacted.includes('s3cr'));
  });

  it('turns on TLS for rediss://, checking the certificate against the host name', () => {
    const tls = parseQueueUrl('rediss://eval:pw@redis.internal:6380');
    assert.equal(tls.tls, true);
    assert.deepEqual(tls.options, { host: 'redis.internal', port: 6380, db: 0, username: 'eval', password: 'pw', tls: { servername: 'redis.internal' } });
    assert.equal(tls.redacted, 'rediss://eval:***@redis.internal:6380');
    assert.equal(parseQueueUrl('redis://[::1]:7000').options.host, '::1');
    // An IP address is checked as one: no server name (Node warns of one that is an IP).
    assert.deepEqual(parseQueueUrl('rediss://10.0.0.5:6380').options.tls, {});
    assert.deepEqual(parseQueueUrl('rediss://[::1]:6380').options.tls, {});
  });

  it('says what to write instead of a wrong address, without echoing a password', () => {
    assert.throws(
      () => parseQueueUrl('http://host:6379'),
      (e: Error) => e instanceof QueueUrlError && /redis:\/\/ or rediss:\/\//.test(e.message),
    );
    assert.throws(() => parseQueueUrl('host:6379'), QueueUrlError);
    assert.throws(() => parseQueueUrl('redis://host/queue'), /database number/);
    assert.throws(() => parseQueueUrl('redis://host?tls=true'), /no query/);
    assert.throws(
      () => parseQueueUrl('not a url :pw@x'),
      (e: Error) => !e.message.includes(':pw@'),
    );
    // A "/" in the password ends the host early: the rest reads as a path, which must not be echoed.
    assert.throws(
      () => parseQueueUrl('redis://user:12/cr3t@host:6379'),
      (e: Error) => e instanceof QueueUrlError && /percent-encoded/.test(e.message) && !e.message.includes('cr3t'),
    );
    // A stray % in the password: said in words, not a URIError, and not shown.
    assert.throws(
      () => parseQueueUrl('redis://:50%off@host:6379'),
      (e: Error) => e instanceof QueueUrlError && /%25/.test(e.message) && !e.message.includes('50%off'),
    );
  });
});

describe('eval-worker --run-timeout', () => {
  const fail = (message: string): never => {
    throw new Error(message);
  };

  it('reads a duration in s, m or h (a bare number is minutes); no flag is no limit', () => {
    assert.equal(runTimeoutFlag(undefined, fail), undefined);
    assert.equal(runTimeoutFlag('90', fail), 90 * 60_000);
    assert.equal(runTimeoutFlag('90m', fail), 90 * 60_000);
    assert.equal(runTimeoutFlag('2h', fail), 2 * 3_600_000);
    assert.equal(runTimeoutFlag('1.5h', fail), 90 * 60_000);
    assert.equal(runTimeoutFlag('30s', fail), 30_000);
    assert.equal(runTimeoutFlag(' 45 s ', fail), 45_000);
  });

  it('refuses anything else, saying what to write', () => {
    for (const bad of ['', 'soon', '-5m', '0', '0s', '5d', '1h30m', '200h', 'Infinity'])
      assert.throws(
        () => runTimeoutFlag(bad, fail),
        (e: Error) =>
          e.message.startsWith('--run-timeout must be a duration such as 90m, 2h or 30s (a bare number is minutes), above 0 and at most 168h, got '),
        bad,
      );
  });
});

describe('grid definition', () => {
  it('every preset round-trips through its definition and keeps its id, whatever its name', () => {
    for (const name of PRESET_NAMES) {
      const config = presetConfig(name);
      if (untransportable(config).length) continue; // the ablation's surrogate kinds run locally
      const wire = JSON.parse(JSON.stringify(gridDefinition(config)));
      const back = configFromDefinition(wire, gridId(config));
      assert.equal(gridId(back), gridId(config), name);
      assert.deepEqual(
        planRuns(back).map((r) => runKey(back, r)),
        planRuns(config).map((r) => runKey(config, r)),
        name,
      );
      assert.equal(gridId({ ...config, name: 'other-name' }), gridId(config));
    }
    assert.notEqual(gridId(presetConfig('quick')), gridId({ ...presetConfig('quick'), seeds: 5 }));
    assert.ok(untransportable(presetConfig('ablation')).length > 0);
  });

  it('refuses a definition that does not hash to its id, or that is not a valid grid', () => {
    const config = presetConfig('quick');
    const wire = JSON.parse(JSON.stringify(gridDefinition(config)));
    assert.throws(() => configFromDefinition({ ...wire, seeds: 9 }, gridId(config)), /hashes to/);
    assert.throws(() => configFromDefinition({ ...wire, budgets: [-1] }, gridId(config)), /budgets/);
    assert.throws(() => configFromDefinition({ ...wire, defenses: [{ spec: 'nonsense:x=1' }] }, gridId(config)), /defenses\[0\]/);
  });

  it('takes only jobs that are runs of the grid, under their own key', () => {
    const config = validateConfig({ name: 't', defenses: ['none', 'mad:eps=0.5'], policies: ['random'], budgets: [100, 200], seeds: 2 });
    const id = gridId(config);
    const [run] = planRuns(config).slice(-1);
    const data = jobData(id, config, run);
    assert.equal(data.key, runKey(config, run));
    assert.equal(runOfJob(config, data.key, data).defense.spec, run.defense.spec);
    assert.throws(() => runOfJob(config, 'other-key', data), /its run's key/);
    assert.throws(() => runOfJob(config, data.key, { ...data, run: { ...data.run, budget: 300 } }), /not in the grid/);
    assert.throws(() => runOfJob(config, data.key, { ...data, run: { ...data.run, spec: 'argmax' } }), /not in the grid/);
    assert.throws(() => runOfJob(config, data.key, { ...data, run: { ...data.run, attackerSeed: 2 } }), /seed/);
  });
});

describe('queue status', () => {
  const beat = (name: string, at: number, running: WorkerBeat['running'] = []): WorkerBeat => ({
    name,
    host: 'h',
    pid: 1,
    jobs: 2,
    state: 'ready',
    running,
    finished: 3,
    at,
  });

  it('shows runs by state, an ETA once runs finish, and what each live worker runs', () => {
    let now = 0;
    const eta = new EtaEstimator(() => now);
    assert.equal(eta.update({ total: 10, done: 0, running: 2, queued: 8, failed: 0 }), undefined);
    now = 60_000;
    assert.equal(eta.update({ total: 10, done: 2, running: 2, queued: 6, failed: 0 }), 240);
    const fields = {
      a: JSON.stringify(beat('a', 59_000, [{ key: 'k', label: 'mad eps=0.5 · random · 100', since: 30_000 }])),
      gone: JSON.stringify(beat('gone', 0)),
      junk: '{',
    };
    const { live, stale } = parseBeats(fields, now);
    assert.deepEqual(
      live.map((w) => w.name),
      ['a'],
    );
    assert.deepEqual(stale.sort(), ['gone', 'junk']);
    const lines = statusLines({ total: 10, done: 2, running: 2, queued: 6, failed: 0 }, 240, live, now);
    assert.equal(lines[0], 'queue: 2/10 done · 2 running · 6 queued · 0 failed · ETA 4m 00s · 1 worker');
    assert.equal(lines[1], '  a [1/2, 3 done]: mad eps=0.5 · random · 100 (30s)');
    assert.match(
      statusLines(
        { total: 1, done: 0, running: 0, queued: 1, failed: 0 },
        undefined,
        [{ ...beat('b', now), state: 'refused', reason: 'fingerprint mismatch' }],
        now,
      )[1],
      /refused: fingerprint mismatch/,
    );
    // A worker that joined with every run left running elsewhere: prepared, no child started.
    assert.equal(
      statusLines({ total: 1, done: 0, running: 1, queued: 0, failed: 0 }, undefined, [{ ...beat('c', now), state: 'waiting' }], now)[1],
      '  c [0/2, 3 done]: waiting for a run to take (no child process started)',
    );
    assert.equal(formatDuration(3725), '1h 02m');
  });

  it('names each part of a fingerprint that differs', () => {
    const ours = { data: 'a'.repeat(64), victim: 'b'.repeat(64) };
    assert.deepEqual(fingerprintDifferences(ours, { ...ours }), []);
    const diff = fingerprintDifferences(ours, { ...ours, victim: 'c'.repeat(64), misinformation: 'd'.repeat(64) });
    assert.equal(diff.length, 2);
    assert.match(diff[0], /^victim weights bbbbbbbbbbbb… ≠ coordinator's cccccccccccc…$/);
    assert.match(diff[1], /^misinformation weights none/);
    // Records depend on the training threads: another count is a mismatch, an absent one counts as 1.
    assert.deepEqual(fingerprintDifferences({ ...ours, trainThreads: 1 }, ours), []);
    assert.deepEqual(fingerprintDifferences({ ...ours, trainThreads: 2 }, { ...ours, trainThreads: 2 }), []);
    const threads = fingerprintDifferences({ ...ours, trainThreads: 4 }, { ...ours, trainThreads: 1 });
    assert.deepEqual(threads, ["training threads 4 ≠ coordinator's 1 (set MSD_TRAIN_THREADS=1 here: the trained weights depend on it)"]);
  });
});
