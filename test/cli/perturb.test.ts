import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCli } from '../helpers/run-cli.js';

describe('perturb command', () => {
  it('applies a defense to a file and reports L1 and top-1 changes', () => {
    const result = runCli(['perturb', '--defense', 'mad-argmax:eps=0.8', '--input', 'examples/answers.json']);
    assert.equal(result.status, 0, result.stderr);
    const out = JSON.parse(result.stdout) as { probs: number[][]; l1: number[]; top1Changed: boolean[] };
    assert.equal(out.probs.length, 2);
    out.l1.forEach((l1) => assert.ok(Math.abs(l1 - 0.8) < 1e-5, `l1 ${l1}`));
    assert.deepEqual(out.top1Changed, [false, false]);
    out.probs.forEach((row) => assert.ok(Math.abs(row.reduce((s, v) => s + v, 0) - 1) < 1e-5));
  });

  it('reads stdin and gives the same noise for the same input key', () => {
    const doc = JSON.stringify({ probs: [[0.7, 0.2, 0.1]], inputKeys: ['k'] });
    const a = runCli(['perturb', '-d', 'noise:scale=1', '--secret', 's'], doc);
    const b = runCli(['perturb', '-d', 'noise:scale=1', '--secret', 's'], doc);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
  });

  const failures: [string, string[], string, RegExp][] = [
    ['bad JSON', ['-d', 'none'], '{"probs": [[0.5,', /not valid JSON/],
    ['a bad row', ['-d', 'none'], '{"probs": [[0.5, 0.7]]}', /row 0: sums to 1\.2/],
    ['an unknown field', ['-d', 'none'], '{"probs": [[0.5, 0.5]], "prob": 1}', /unknown field\(s\) "prob"/],
    ['a bad spec', ['-d', 'mad:eps=9'], '{"probs": [[0.5, 0.5]]}', /exceeds the largest possible/],
    ['missing context', ['-d', 'mad'], '{"probs": [[0.5, 0.5]]}', /needs the surrogate/],
  ];
  for (const [name, args, input, message] of failures) {
    it(`exits 2 with one line on stderr and nothing on stdout for ${name}`, () => {
      const result = runCli(['perturb', ...args], input);
      assert.equal(result.status, 2);
      assert.equal(result.stdout, '');
      assert.match(result.stderr, message);
      assert.equal(result.stderr.trim().split('\n').length, 1);
    });
  }

  it('lists the defenses with their parameters', () => {
    const result = runCli(['perturb', '--list']);
    assert.equal(result.status, 0);
    for (const name of ['mad', 'reverse-sigmoid', 'misinformation', 'noise', 'topk', 'rounding', 'argmax'])
      assert.match(result.stdout, new RegExp(`^${name}`, 'm'));
  });
});
