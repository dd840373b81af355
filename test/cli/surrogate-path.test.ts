import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { proxyOptionsFromSettings } from '../../src/cli/commands/proxy.js';
import { resolveProxySettings } from '../../src/cli/config/proxy-config.js';
import { surrogateSourceFromFlags } from '../../src/cli/flags/surrogate-flags.js';
import { writeGraphModel } from '../models/graph-fixture.js';
import { inputs } from '../models/helpers.js';
import { runCli } from '../helpers/run-cli.js';

const fail = (message: string): never => {
  throw new Error(message);
};

describe('--surrogate PATH: one flag for a TF.js model’s JSON file or directory, or an ONNX file', () => {
  let dir: string;
  let json: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-cli-surrogate-path-'));
    ({ json } = await writeGraphModel(dir, 'mobilenet_v2_140_224'));
    // Two 8×8×3 images, each a colour of its own, and the victim's (made-up) answers for them.
    const images = inputs(2, 192, 5).map((v, i) => Math.min(1, Math.max(0, (i < 192 ? 0.2 : 0.8) + 0.15 * v)));
    await writeFile(join(dir, 'inputs.json'), JSON.stringify([Array.from(images.subarray(0, 192)), Array.from(images.subarray(192))]));
    await writeFile(
      join(dir, 'doc.json'),
      JSON.stringify({
        probs: [
          [0.05, 0.05, 0.85, 0.05],
          [0.1, 0.7, 0.1, 0.1],
        ],
      }),
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('reads --surrogate like its aliases, with --reinit and --surrogate-engine, and asks for the start-up check', () => {
    const source = surrogateSourceFromFlags({ surrogate: json, reinit: '3', surrogateEngine: 'tfjs' }, fail);
    assert.deepEqual(source, { dir: json, reinit: 3, engine: 'tfjs' });
    assert.equal(source?.check, true);
    assert.equal(Object.keys(source!).includes('check'), false, 'not enumerable: not part of where the surrogate comes from');
    assert.deepEqual(surrogateSourceFromFlags({ surrogateFrom: json, reinit: '3' }, fail), surrogateSourceFromFlags({ surrogate: json, reinit: '3' }, fail));
    assert.equal(surrogateSourceFromFlags({ surrogateOnnx: 'm.bin' }, fail)?.check, true);
    assert.throws(() => surrogateSourceFromFlags({ surrogate: 'm.onnx', surrogateEngine: 'onnx' }, fail), /--surrogate PATH naming a TF.js model/);
    assert.throws(() => surrogateSourceFromFlags({ reinit: '1' }, fail), /add --surrogate PATH/);
  });

  it('perturb: a graph model’s <name>.json re-initialised steers mad-argmax; loaded as is, it warns that it may be the victim', () => {
    const args = ['perturb', '-i', join(dir, 'doc.json'), '--inputs', join(dir, 'inputs.json'), '-d', 'mad-argmax:eps=0.8'];
    const fresh = runCli([...args, '--surrogate', json, '--reinit', '3']);
    assert.equal(fresh.status, 0, fresh.stderr);
    assert.doesNotMatch(fresh.stderr, /warning: surrogate/);
    const out = JSON.parse(fresh.stdout) as { probs: number[][] };
    assert.equal(out.probs.length, 2);
    const stored = runCli([...args, '--surrogate-from', json]);
    assert.equal(stored.status, 0, stored.stderr);
    assert.match(stored.stderr, /warning: surrogate \(stored-weights\): .*no reinit.*--reinit SEED/);
  });

  it('proxy: the surrogate config key takes the JSON file (surrogateFrom is its alias); --help names the aliases', async () => {
    const base = { upstream: 'http://127.0.0.1:1', defense: 'mad-argmax:eps=0.8', logLevel: 'silent', reinit: 3 };
    const rows = { rows: 1, cols: 192, data: inputs(1, 192, 2).map((v) => (v + 1) / 2) };
    const answers: number[][] = [];
    for (const key of ['surrogate', 'surrogateFrom']) {
      const settings = resolveProxySettings({}, { name: 'proxy.json', values: { ...base, [key]: json } }, {});
      const options = await proxyOptionsFromSettings(settings);
      const context = await options.context!(['surrogate'], rows);
      assert.equal(context.surrogateProbs?.cols, 4);
      answers.push(Array.from(context.surrogateProbs!.data));
    }
    assert.deepEqual(answers[0], answers[1]);
    const help = runCli(['proxy', '--help']).stdout.replace(/\s+/g, ' ');
    assert.match(help, /--surrogate <path> MAD’s surrogate: a TF.js model’s JSON file by any name/);
    assert.match(help, /--surrogate-from <path> alias of --surrogate/);
    assert.match(help, /--surrogate-onnx <file> alias of --surrogate for an ONNX model/);
  });
});
