import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { runCli } from '../helpers/run-cli.js';
import { assertNoOriginalNumbers } from './helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from './helpers/stub-upstream.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

describe('msd proxy', () => {
  let upstream: StubUpstream;
  before(async () => {
    upstream = await startStubUpstream('tf-serving');
  });
  after(async () => {
    await upstream.close();
  });

  it('serves the defended upstream, logs JSON lines, and exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'proxy', '--upstream', upstream.url, '--protocol', 'tf-serving', '--defense', 'argmax', '--port', '0'], { cwd: root });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (c: Buffer) => {
        stderr += c;
        const match = /proxy: (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
        if (match) resolve(match[1]);
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
    try {
      const res = await request(url).post('/v1/models/mnist:predict').send({ instances: [[1, 2], [3, 4]] }).expect(200);
      assert.deepEqual(res.body, { predictions: [[1, 0, 0], [0, 1, 0]] });
      assertNoOriginalNumbers(res.text);
    } finally {
      child.kill('SIGTERM');
    }
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0);
    const line = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.outcome === 'perturbed');
    assert.equal(line?.defense, 'argmax');
  });

  it('exits 2 with a clear message on a bad defense or protocol', () => {
    const badDefense = runCli(['proxy', '--upstream', upstream.url, '--defense', 'mad:eps=7']);
    assert.equal(badDefense.status, 2);
    assert.match(badDefense.stderr, /proxy: defense: mad: eps=7 exceeds/);
    const badProtocol = runCli(['proxy', '--upstream', upstream.url, '--protocol', 'grpc']);
    assert.equal(badProtocol.status, 2);
    assert.match(badProtocol.stderr, /--protocol must be one of kserve-v2, tf-serving, json-path/);
  });
});
