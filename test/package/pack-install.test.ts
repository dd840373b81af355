/**
 * The package as a user gets it: `npm pack`, install the tarball into a fresh app in a temporary
 * folder, mount the middleware, answer a request through it, run the CLI from there. Dependencies
 * come from the npm cache (populated by `npm ci`), so the test needs no network when it is warm.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const env = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
const npm = (args: string[], cwd: string, timeout = 180_000) => run('npm', args, { cwd, env, timeout, maxBuffer: 16 * 1024 * 1024 });
const node = (args: string[], cwd: string, input?: string) =>
  new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
    const child = execFile(process.execPath, args, { cwd, env, timeout: 60_000 }, (error, stdout, stderr) =>
      error ? reject(Object.assign(error, { stderr })) : resolve({ stdout, stderr }),
    );
    if (input !== undefined) child.stdin?.end(input);
  });

const APP = `
import express from 'express';
import { poisonPredictions } from 'model-stealing-defense';
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

/** Every entry that loads no TensorFlow.js, used as a TypeScript user would. */
const TYPED_ENTRIES = `
import { parseDefense, utilityCost, type ProbBatch } from 'model-stealing-defense/defenses';
import { createClientDetection, type ClientState } from 'model-stealing-defense/detection';
import { startDefenseProxy, poisonPredictions, type ProxyOptions } from 'model-stealing-defense/server';
const batch: ProbBatch = { rows: 1, cols: 2, data: Float32Array.of(0.3, 0.7) };
const defended = parseDefense('rounding:decimals=1').apply(batch, {});
const options: ProxyOptions = { upstream: 'http://127.0.0.1:8080', defense: 'rounding:decimals=2' };
const state: ClientState | undefined = undefined;
export const used = [utilityCost(batch, defended), options, startDefenseProxy, poisonPredictions, createClientDetection, state];
`;

/** The README's mount example, in TypeScript. */
const TYPED_MOUNT = `
import express from 'express';
import { poisonPredictions, surrogateContext, Surrogate, initBackend, type InputRows } from 'model-stealing-defense';
declare const yourModel: { answer(inputs: InputRows): Promise<unknown> };

await initBackend();
const surrogate = Surrogate.random({ arch: 'mlp', inputShape: [784], classes: 10, seed: 1 });
const defend = poisonPredictions({
  defense: 'mad:eps=0.8,oracle=argmax',
  protocol: 'kserve-v2',
  context: surrogateContext({ surrogate }),
  onFailure: 'error',
});
const app = express();
app.post('/v2/models/mnist/infer', express.json(), defend, async (req, res) => {
  const inputs = await defend.inputsOf(req);
  res.json(await yourModel.answer(inputs));
});
app.use(defend.errorHandler);
app.listen(8080);
const ops = express();
ops.get('/metrics', defend.metricsHandler);
ops.listen(9464, '127.0.0.1');
`;

/** Prints which of TensorFlow.js and Express an import loaded (CommonJS modules land in require.cache). */
const LOADED = (specifier: string) => `
import { createRequire } from 'node:module';
await import('${specifier}');
const files = Object.keys(createRequire(import.meta.url).cache);
process.stdout.write(JSON.stringify({ tfjs: files.some((f) => f.includes('/@tensorflow/')), express: files.some((f) => /\\/express\\//.test(f)) }));
`;

describe('the packed package, installed into a fresh app', { timeout: 300_000 }, () => {
  let dir: string;
  let app: string;
  let installed: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'msd-pack-'));
    await npm(['pack', '--pack-destination', dir], root);
    const tarball = (await readdir(dir)).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'npm pack wrote no tarball');
    app = join(dir, 'app');
    installed = join(app, 'node_modules', 'model-stealing-defense');
    await mkdir(app);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', version: '1.0.0', private: true, type: 'module' }));
    // Dependencies from the npm cache when it holds them; tfjs and Express arrive as peer dependencies.
    // Optional ones (onnxruntime-node, sharp's binaries: loaded lazily, by features not tested here) are left out.
    // A TypeScript user's documented extras: typescript, @types/node, @types/express (Express 5 ships no types).
    const versions = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')).devDependencies;
    const typed = ['typescript', '@types/node', '@types/express'].map((name) => `${name}@${versions[name]}`);
    await npm(['install', '--prefer-offline', '--omit=optional', '--no-audit', '--no-fund', join(dir, tarball), ...typed], app);
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('ships compiled code and declarations, not the sources, tests or benchmarks', async () => {
    const top = await readdir(installed);
    for (const absent of ['src', 'test', 'bench', 'tsconfig.json']) assert.ok(!top.includes(absent), `${absent} is in the tarball`);
    const compiled = await readdir(join(installed, 'dist', 'src'));
    assert.ok(compiled.includes('index.js') && compiled.includes('index.d.ts'), `dist/src holds ${compiled.join(', ')}`);
    assert.ok(!(await readdir(join(app, 'node_modules'))).includes('tsx'), 'tsx was installed: it must stay a dev dependency');
  });

  it('mounts the middleware in an Express app and answers a defended request', async () => {
    await writeFile(join(app, 'server.mjs'), APP);
    const { stdout } = await node(['server.mjs'], app);
    const { status, body } = JSON.parse(stdout);
    assert.equal(status, 200);
    const data: number[] = body.outputs[0].data;
    assert.equal(data.length, 3);
    for (const v of data) assert.equal(Math.round(v * 10) / 10, v, `${v} is not rounded to one decimal`);
    assert.notDeepEqual(data, [0.123, 0.2345, 0.6425]);
  });

  it('loads neither TensorFlow.js nor Express for ./defenses, ./server and ./detection, and TensorFlow.js for the root', async () => {
    await writeFile(join(app, 'defenses.mjs'), LOADED('model-stealing-defense/defenses'));
    await writeFile(join(app, 'root.mjs'), LOADED('model-stealing-defense'));
    assert.deepEqual(JSON.parse((await node(['defenses.mjs'], app)).stdout), { tfjs: false, express: false });
    assert.equal(JSON.parse((await node(['root.mjs'], app)).stdout).tfjs, true);
    for (const entry of ['server', 'detection']) {
      await writeFile(join(app, `${entry}.mjs`), LOADED(`model-stealing-defense/${entry}`));
      assert.deepEqual(JSON.parse((await node([`${entry}.mjs`], app)).stdout), { tfjs: false, express: false }, entry);
    }
  });

  it('its declarations compile with skipLibCheck false: the README mount example, and each entry', async () => {
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          skipLibCheck: false,
          noEmit: true,
          types: ['node'],
        },
        include: ['*.ts'],
      }),
    );
    await writeFile(join(app, 'entries.ts'), TYPED_ENTRIES);
    await writeFile(join(app, 'mount.ts'), TYPED_MOUNT);
    const tsc = join(app, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await node([tsc, '-p', '.'], app).then(
      () => '',
      (error: { stdout?: string }) => String(error.stdout ?? error),
    );
    // TensorFlow.js 4.22's own declarations do not compile under strict with skipLibCheck false (its
    // TS2411/Long errors): those are theirs. Nothing may be wrong in ours or in the example.
    const errors = result.split('\n').filter((line) => /error TS\d+/.test(line));
    const ours = errors.filter((line) => !line.startsWith('node_modules/@tensorflow/'));
    assert.deepEqual(ours, [], result);
  });

  it('shares one copy of TensorFlow.js with the app', async () => {
    const nested = await readdir(join(installed, 'node_modules')).catch(() => [] as string[]);
    assert.ok(!nested.includes('@tensorflow'), 'the package carries its own @tensorflow copy');
    assert.ok((await readdir(join(app, 'node_modules', '@tensorflow'))).includes('tfjs-backend-wasm'));
  });

  it('runs `npx msd perturb` and `npx msd --help` from the app, without tsx', async () => {
    const probs = JSON.stringify({ probs: [[0.1, 0.25, 0.65]] });
    const help = await npm(['exec', '--offline', '--', 'msd', '--help'], app, 60_000);
    assert.match(help.stdout, /Usage: msd/);
    await writeFile(join(app, 'probs.json'), probs);
    const { stdout } = await npm(['exec', '--offline', '--', 'msd', 'perturb', '-d', 'argmax', '-i', 'probs.json'], app, 60_000);
    assert.match(stdout, /\[\s*0,\s*0,\s*1\s*\]/);
  });

  it('has `npm start` run the demo command from the installed package', async () => {
    const { stdout } = await npm(['start', '--', '--help'], installed, 60_000);
    assert.match(stdout, /msd serve/);
  });
});
