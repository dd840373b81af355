import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { proxyOptionsFromSettings } from '../../src/cli/commands/proxy.js';
import { resolveProxySettings } from '../../src/cli/config/proxy-config.js';
import { surrogateSourceFromFlags } from '../../src/cli/flags/surrogate-flags.js';
import { ServingOptionError } from '../../src/server/errors.js';
import { writeOnnxModel } from '../../src/models/onnx/writer.js';
import { runCli } from '../helpers/run-cli.js';

const fail = (message: string): never => {
  throw new Error(message);
};

describe('surrogate flags', () => {
  it('read each source, with an optional seed', () => {
    assert.equal(surrogateSourceFromFlags({}, fail), undefined);
    assert.deepEqual(surrogateSourceFromFlags({ surrogate: 'm' }, fail), { dir: 'm', reinit: undefined });
    assert.deepEqual(surrogateSourceFromFlags({ surrogateFrom: 'victim', reinit: '7' }, fail), { dir: 'victim', reinit: 7 });
    assert.deepEqual(surrogateSourceFromFlags({ surrogateOnnx: 'm.onnx', reinit: '0' }, fail), { onnx: 'm.onnx', reinit: 0 });
    assert.deepEqual(surrogateSourceFromFlags({ surrogateFrom: 'victim', reinit: '7', surrogateThread: true }, fail), {
      dir: 'victim',
      reinit: 7,
      thread: true,
    });
    assert.deepEqual(surrogateSourceFromFlags({ surrogateOnnx: 'm.onnx', surrogateThread: true }, fail), { onnx: 'm.onnx', reinit: undefined, thread: true });
    assert.deepEqual(surrogateSourceFromFlags({ surrogateFrom: 'victim', reinit: '7', surrogateEngine: 'onnx' }, fail), {
      dir: 'victim',
      reinit: 7,
      engine: 'onnx',
    });
  });

  it('refuse a bad combination, saying what to write', () => {
    assert.throws(() => surrogateSourceFromFlags({ reinit: '3' }, fail), /add --surrogate-from DIR/);
    assert.throws(() => surrogateSourceFromFlags({ surrogateFrom: 'a', reinit: '-1' }, fail), /integer seed/);
    assert.throws(() => surrogateSourceFromFlags({ surrogateFrom: 'a', reinit: '1.5' }, fail), /integer seed/);
    assert.throws(() => surrogateSourceFromFlags({ surrogate: 'a', surrogateOnnx: 'b' }, fail), /give one/);
    assert.throws(() => surrogateSourceFromFlags({ surrogateThread: true }, fail), /--surrogate-thread needs a surrogate to run: add --surrogate-from/);
    assert.throws(
      () => surrogateSourceFromFlags({ surrogateFrom: 'victim', surrogateEngine: 'torch' }, fail),
      /--surrogate-engine must be tfjs or onnx, got "torch"/,
    );
    assert.throws(() => surrogateSourceFromFlags({ surrogateOnnx: 'm.onnx', surrogateEngine: 'onnx' }, fail), /give it with --surrogate-from DIR/);
    assert.throws(() => surrogateSourceFromFlags({ surrogateFrom: 'm.onnx', surrogateEngine: 'tfjs' }, fail), /give it with --surrogate-from DIR/);
  });
});

describe('perturb with a TF.js surrogate converted to ONNX (--surrogate-engine onnx)', () => {
  let dir: string;
  const NSFW = 'node_modules/nsfwjs/dist/models/mobilenet_v2';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-cli-engine-'));
    await writeFile(join(dir, 'doc.json'), JSON.stringify({ probs: [[0.6, 0.1, 0.1, 0.1, 0.1]] }));
    // One 224×224×3 image as a flat row, values in 0..1.
    const image = Array.from({ length: 224 * 224 * 3 }, (_, i) => Math.round(((i * 7919) % 1000) / 10) / 100);
    await writeFile(join(dir, 'inputs.json'), JSON.stringify([image]));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('runs mad on the re-initialised MobileNetV2 through onnxruntime, and refuses jacobian=full', () => {
    const args = [
      'perturb',
      '-i',
      join(dir, 'doc.json'),
      '--inputs',
      join(dir, 'inputs.json'),
      '--surrogate-from',
      NSFW,
      '--reinit',
      '1',
      '--surrogate-engine',
      'onnx',
    ];
    const ok = runCli([...args, '-d', 'mad:eps=0.5,oracle=argmax']);
    assert.equal(ok.status, 0, ok.stderr);
    const [row] = (JSON.parse(ok.stdout) as { probs: number[][] }).probs;
    assert.equal(row.length, 5);
    const l1 = row.reduce((sum, p, k) => sum + Math.abs(p - [0.6, 0.1, 0.1, 0.1, 0.1][k]), 0);
    assert.ok(l1 > 1e-3 && l1 <= 0.5 + 1e-4, `L1 ${l1}`);
    const full = runCli([...args, '-d', 'mad:eps=0.5,jacobian=full']);
    assert.equal(full.status, 2);
    assert.match(full.stderr, /jacobian=last-layer/);
  });
});

describe('perturb with an ONNX surrogate', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-cli-onnx-'));
    // A 3-class linear softmax model over 2 inputs.
    const model = writeOnnxModel({
      inputs: [{ name: 'x', shape: ['n', 2] }],
      outputs: [{ name: 'y', shape: ['n', 3] }],
      initializers: [{ name: 'W', dims: [2, 3], data: Float32Array.from([1, -1, 0.5, 0.2, 0.3, -0.4]) }],
      nodes: [
        { op: 'MatMul', inputs: ['x', 'W'], outputs: ['z'] },
        { op: 'Softmax', inputs: ['z'], outputs: ['y'], attributes: { axis: 1 } },
      ],
    });
    await writeFile(join(dir, 'm.onnx'), model);
    await writeFile(
      join(dir, 'doc.json'),
      JSON.stringify({
        probs: [
          [0.7, 0.2, 0.1],
          [0.1, 0.1, 0.8],
        ],
      }),
    );
    await writeFile(
      join(dir, 'inputs.json'),
      JSON.stringify([
        [1, 2],
        [-1, 0.5],
      ]),
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('runs mad through --surrogate-onnx --reinit, and refuses jacobian=full', () => {
    const args = ['perturb', '-i', join(dir, 'doc.json'), '--inputs', join(dir, 'inputs.json'), '--surrogate-onnx', join(dir, 'm.onnx'), '--reinit', '4'];
    const ok = runCli([...args, '-d', 'mad:eps=0.5,oracle=argmax']);
    assert.equal(ok.status, 0, ok.stderr);
    const out = JSON.parse(ok.stdout) as { probs: number[][] };
    assert.equal(out.probs.length, 2);
    for (const row of out.probs) assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5);
    const full = runCli([...args, '-d', 'mad:eps=0.5,jacobian=full']);
    assert.equal(full.status, 2);
    assert.match(full.stderr, /jacobian=last-layer/);
    const noArch = runCli(['perturb', '-i', join(dir, 'doc.json'), '--inputs', join(dir, 'inputs.json'), '--reinit', '4', '-d', 'mad:eps=0.5']);
    assert.equal(noArch.status, 2);
    assert.match(noArch.stderr, /--surrogate-from DIR/);
  });

  it('builds the proxy over --surrogate-onnx --reinit, and refuses mad jacobian=full when it is built', async () => {
    const flags = (defense: string) =>
      resolveProxySettings(
        {
          upstream: 'http://127.0.0.1:1',
          protocol: 'kserve-v2',
          defense,
          port: '0',
          host: '127.0.0.1',
          timeoutMs: '1000',
          maxBody: '100000',
          onFailure: 'error',
          logLevel: 'silent',
          surrogateOnnx: join(dir, 'm.onnx'),
          reinit: '2',
        },
        undefined,
        {},
      );
    const options = await proxyOptionsFromSettings(flags('mad:eps=0.5'));
    const context = await options.context!(['surrogate'], { rows: 2, cols: 2, data: Float32Array.from([1, 2, -1, 0.5]) });
    assert.equal(context.surrogateProbs?.rows, 2);
    await assert.rejects(
      proxyOptionsFromSettings(flags('mad:eps=0.5,jacobian=full')),
      (e: unknown) => e instanceof ServingOptionError && /jacobian=last-layer/.test(e.message),
    );
  });

  it('runs the proxy’s surrogate in a worker thread with surrogateThread (config file) or --surrogate-thread, with the same answers', async () => {
    const base = { upstream: 'http://127.0.0.1:1', defense: 'mad:eps=0.5', logLevel: 'silent', surrogateOnnx: join(dir, 'm.onnx'), reinit: '2' };
    const fromFile = resolveProxySettings({}, { name: 'proxy.json', values: { ...base, surrogateThread: true } }, {});
    const fromFlag = resolveProxySettings({ ...base, surrogateThread: true }, undefined, {});
    const inThread = resolveProxySettings(base, undefined, {});
    for (const settings of [fromFile, fromFlag]) assert.equal(surrogateSourceFromFlags(settings, fail)?.thread, true);
    assert.equal(surrogateSourceFromFlags(inThread, fail)?.thread, undefined);
    assert.throws(
      () => resolveProxySettings({}, { name: 'proxy.json', values: { ...base, surrogateThread: 'yes' } }, {}),
      /"surrogateThread" must be true or false/,
    );
    const rows = { rows: 2, cols: 2, data: Float32Array.from([1, 2, -1, 0.5]) };
    const threaded = await proxyOptionsFromSettings(fromFile);
    const local = await proxyOptionsFromSettings(inThread);
    const [a, b] = await Promise.all([threaded.context!(['surrogate'], rows), local.context!(['surrogate'], rows)]);
    assert.deepEqual(Array.from(a.surrogateProbs!.data), Array.from(b.surrogateProbs!.data));
    assert.equal(runCli(['proxy', '--help']).stdout.includes('--surrogate-thread'), true);
  });
});
