/**
 * onnxruntime-node is optional: in a copy of the tree where it cannot be resolved, the sources build
 * (type-check included), a defended request is answered, `msd info` says ONNX is off and how to turn
 * it on, and an ONNX surrogate fails with the message that names the install line.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { writeOnnxModel } from '../../src/models/onnx/writer.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const WITHOUT = new Set(['onnxruntime-node', 'onnxruntime-common']);

const APP = `
import express from 'express';
import { poisonPredictions } from './dist/src/index.js';
const app = express();
app.use(express.json());
app.post('/v2/models/m/infer', poisonPredictions({ defense: 'rounding:decimals=1' }), (req, res) => {
  res.json({ model_name: 'm', outputs: [{ name: 'probs', shape: [1, 3], datatype: 'FP32', data: [0.123, 0.2345, 0.6425] }] });
});
const server = app.listen(0, '127.0.0.1', async () => {
  const answer = await fetch('http://127.0.0.1:' + server.address().port + '/v2/models/m/infer', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'x', shape: [1, 1], datatype: 'FP32', data: [0] }] }),
  });
  process.stdout.write(JSON.stringify({ status: answer.status, body: await answer.json() }));
  server.close();
});
`;

describe('without onnxruntime-node installed', { timeout: 300_000 }, () => {
  let dir: string;
  const node = (args: string[]) => run(process.execPath, args, { cwd: dir, timeout: 120_000 });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-no-ort-'));
    // The sources are copied (TypeScript and Node resolve packages from a file's real path); every
    // dependency but onnxruntime is linked.
    for (const entry of ['src', 'bin', 'package.json', 'tsconfig.json', 'tsconfig.build.json'])
      await cp(join(root, entry), join(dir, entry), { recursive: true });
    await mkdir(join(dir, 'node_modules'));
    for (const name of await readdir(join(root, 'node_modules'))) {
      if (!WITHOUT.has(name)) await symlink(join(root, 'node_modules', name), join(dir, 'node_modules', name));
    }
    await writeFile(
      join(dir, 'tiny.onnx'),
      writeOnnxModel({
        inputs: [{ name: 'x', shape: ['batch', 2] }],
        outputs: [{ name: 'p', shape: ['batch', 2] }],
        initializers: [],
        nodes: [{ op: 'Softmax', inputs: ['x'], outputs: ['p'], attributes: { axis: 1 } }],
      }),
    );
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('cannot resolve the package (the copy is what it claims)', async () => {
    await assert.rejects(node(['--input-type=module', '-e', "await import('onnxruntime-node')"]), /Cannot find package 'onnxruntime-node'/);
  });

  it('builds: the type-check of the sources does not need the package', async () => {
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    await node([tsc, '-p', 'tsconfig.build.json']);
    assert.ok((await readdir(join(dir, 'dist', 'src'))).includes('index.d.ts'));
  });

  it('answers a defended request', async () => {
    await writeFile(join(dir, 'app.mjs'), APP);
    const { status, body } = JSON.parse((await node(['app.mjs'])).stdout);
    assert.equal(status, 200);
    const data: number[] = body.outputs[0].data;
    for (const v of data) assert.equal(Math.round(v * 10) / 10, v);
  });

  it('says in `msd info` that ONNX is off and how to turn it on', async () => {
    const { stdout } = await node(['dist/src/cli/main.js', 'info']);
    assert.match(stdout, /onnx:\s+not available/);
    assert.match(stdout, /ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node/);
  });

  it('refuses an ONNX surrogate with the install line', async () => {
    await writeFile(join(dir, 'probs.json'), JSON.stringify({ probs: [[0.3, 0.7]] }));
    await writeFile(join(dir, 'inputs.json'), JSON.stringify([[0.1, 0.2]]));
    const failed = await node([
      'dist/src/cli/main.js',
      'perturb',
      '-d',
      'mad:eps=0.5',
      '--surrogate-onnx',
      'tiny.onnx',
      '--inputs',
      'inputs.json',
      '-i',
      'probs.json',
    ]).then(
      () => assert.fail('perturb with an ONNX surrogate succeeded without onnxruntime-node'),
      (error: { code: number; stderr: string }) => error,
    );
    assert.equal(failed.code, 2, failed.stderr);
    assert.match(failed.stderr, /onnxruntime-node, which is not installed.*ONNXRUNTIME_NODE_INSTALL=skip/);
  });
});
