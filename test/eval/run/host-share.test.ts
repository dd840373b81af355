import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { shareHostCores } from '../../../src/eval/run/host-share.js';

describe('evaluation jobs share the machine’s cores', () => {
  let dir: string;
  let other: ChildProcess;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'msd-host-share-'));
    // Another evaluation process: any live process will do.
    other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  });
  after(() => {
    other.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it('alone, a process gives each job the cores over its own jobs', () => {
    const share = shareHostCores(2, { dir: join(dir, 'alone'), cores: 8 });
    assert.equal(share.threadsPerJob(), 4);
    share.release();
  });

  it('counts the jobs of every live process registered, so two workers of one job each on 2 cores get 1 thread each', () => {
    const d = join(dir, 'two');
    const share = shareHostCores(1, { dir: d, cores: 2 });
    assert.equal(share.threadsPerJob(), 2);
    writeFileSync(join(d, String(other.pid)), '1');
    assert.equal(share.threadsPerJob(), 1);
    share.release();
    rmSync(join(d, String(other.pid)));
  });

  it('ignores and removes the files of processes that are gone, and files that are not registrations', async () => {
    const d = join(dir, 'gone');
    const share = shareHostCores(2, { dir: d, cores: 8 });
    const dead = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    await new Promise((resolve) => dead.once('exit', resolve));
    writeFileSync(join(d, String(dead.pid)), '6');
    writeFileSync(join(d, 'notes.txt'), '6');
    writeFileSync(join(d, String(other.pid)), 'garbage');
    assert.equal(share.threadsPerJob(), 4);
    assert.equal(existsSync(join(d, String(dead.pid))), false);
    share.release();
  });

  it('never gives less than one thread, and release takes the jobs out of the count', () => {
    const d = join(dir, 'many');
    const share = shareHostCores(3, { dir: d, cores: 2 });
    assert.equal(share.threadsPerJob(), 1);
    assert.deepEqual(readdirSync(d), [String(process.pid)]);
    share.release();
    assert.deepEqual(readdirSync(d), []);
  });

  it('does not write into a folder others may write to (a planted link is not followed)', () => {
    const d = join(dir, 'open');
    mkdirSync(d);
    chmodSync(d, 0o777);
    const victim = join(dir, 'victim-file');
    writeFileSync(victim, 'precious');
    symlinkSync(victim, join(d, String(process.pid)));
    const share = shareHostCores(2, { dir: d, cores: 4 });
    assert.equal(readFileSync(victim, 'utf8'), 'precious');
    assert.equal(share.threadsPerJob(), 2);
    share.release();
    assert.equal(readFileSync(victim, 'utf8'), 'precious');
  });

  it('without a writable folder counts its own jobs only', () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, '');
    const share = shareHostCores(2, { dir: join(file, 'below'), cores: 4 });
    assert.equal(share.threadsPerJob(), 2);
    share.release();
  });
});
