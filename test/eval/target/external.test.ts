import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { externalClient, type ExternalProtocol } from '../../../src/eval/target/clients.js';
import { presetConfig, type PolicyName } from '../../../src/eval/config.js';
import { DataFileError } from '../../../src/eval/data/errors.js';
import { loadExternalImages } from '../../../src/eval/data/external-data.js';
import { encodeNpy, parseNpy } from '../../../src/eval/data/npy.js';
import { evaluateExternal } from '../../../src/eval/target/external.js';
import { seededRandom } from '../../../src/eval/random.js';
import { parseDefense } from '../../../src/defenses/index.js';
import { initBackend } from '../../../src/models/index.js';

const SIDE = 4;
const FEATURES = SIDE * SIDE;
const CLASSES = 4;
const root = fileURLToPath(new URL('../../..', import.meta.url));

/** The "model": class c is the brightest quadrant; softmax of ½ × the quadrant sums (not too confident, so a defense shows). */
function model(pixels: number[]): number[] {
  const sums = new Array<number>(CLASSES).fill(0);
  pixels.forEach((v, i) => (sums[(Math.floor(i / SIDE) >= SIDE / 2 ? 2 : 0) + (i % SIDE >= SIDE / 2 ? 1 : 0)] += v));
  const exp = sums.map((s) => Math.exp(0.5 * (s - Math.max(...sums))));
  const total = exp.reduce((a, b) => a + b, 0);
  return exp.map((e) => e / total);
}

/** Defended answers: half the probabilities moved onto the top-1 class (L1 > 0, top-1 kept). */
function defend(p: number[]): number[] {
  const top = p.indexOf(Math.max(...p));
  return p.map((v, c) => 0.5 * v + (c === top ? 0.5 : 0));
}

/** A real defense behind `?rs=1`: reverse sigmoid with public parameters the attacker is told. */
const RS_SPEC = 'reverse-sigmoid:beta=0.5,gamma=0.2';
const rs = parseDefense(RS_SPEC);

/** Images whose label is their brightest quadrant, on the 1/255 grid. */
function images(rows: number, seed: number): { pixels: Uint8Array; labels: Uint8Array } {
  const random = seededRandom(seed);
  const pixels = new Uint8Array(rows * FEATURES);
  const labels = new Uint8Array(rows);
  for (let r = 0; r < rows; r++) {
    const label = Math.floor(random() * CLASSES);
    labels[r] = label;
    for (let i = 0; i < FEATURES; i++) {
      const quadrant = (Math.floor(i / SIDE) >= SIDE / 2 ? 2 : 0) + (i % SIDE >= SIDE / 2 ? 1 : 0);
      pixels[r * FEATURES + i] = Math.round(255 * (quadrant === label ? 0.6 + 0.4 * random() : 0.3 * random()));
    }
  }
  return { pixels, labels };
}

function idx(data: Uint8Array, shape: number[]): Uint8Array {
  const header = new Uint8Array(4 + 4 * shape.length);
  const view = new DataView(header.buffer);
  view.setUint8(2, 0x08);
  view.setUint8(3, shape.length);
  shape.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  return Buffer.concat([header, data]);
}

/** A loopback stub answering KServe V2, TF Serving and a custom JSON API, counting requests. */
function startStub(): Promise<{ server: Server; base: string; requests: () => number }> {
  let count = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      count += 1;
      const json = JSON.parse(body);
      const defended = req.url!.includes('defended');
      const reverseSigmoid = req.url!.includes('rs=1');
      const answer = (rows: number[][]) =>
        rows.map((row) =>
          reverseSigmoid
            ? Array.from(rs.apply({ rows: 1, cols: CLASSES, data: Float32Array.from(model(row)) }).data)
            : defended
              ? defend(model(row))
              : model(row),
        );
      res.setHeader('content-type', 'application/json');
      if (req.url!.startsWith('/v2/')) {
        const input = json.inputs[0];
        const rows = input.shape[0];
        const scale = input.datatype === 'UINT8' ? 255 : 1;
        const flat = (input.data as number[]).map((v) => v / scale);
        const out = answer(Array.from({ length: rows }, (_, r) => flat.slice(r * FEATURES, (r + 1) * FEATURES)));
        res.end(JSON.stringify({ outputs: [{ name: 'probs', shape: [rows, CLASSES], datatype: 'FP32', data: out.flat() }] }));
      } else if (req.url!.startsWith('/v1/')) {
        res.end(JSON.stringify({ predictions: answer((json.instances as number[][][][]).map((img) => img.flat(2))) }));
      } else {
        res.end(JSON.stringify({ result: { items: answer(json.payload.images as number[][]).map((scores) => ({ scores })) } }));
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => count })),
  );
}

function runCliAsync(args: string[]): Promise<{ status: number; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: root, timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ status: error ? ((error as { code?: number }).code ?? 1) : 0, stderr, stdout });
    });
  });
}

describe('evaluation of an external endpoint', () => {
  let dir: string;
  let stub: Awaited<ReturnType<typeof startStub>>;

  before(async () => {
    await initBackend({ log: () => {} });
    dir = await mkdtemp(join(tmpdir(), 'msd-external-'));
    stub = await startStub();
    const train = images(200, 1);
    const test = images(80, 2);
    // IDX (gzip), the MNIST file names.
    await writeFile(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idx(train.pixels, [200, SIDE, SIDE])));
    await writeFile(join(dir, 't10k-images-idx3-ubyte'), idx(test.pixels, [80, SIDE, SIDE]));
    await writeFile(join(dir, 't10k-labels-idx1-ubyte'), idx(test.labels, [80]));
    // .npy: float32 transfer images, uint8 test images with int64 labels in y.npy.
    await mkdir(join(dir, 'npy'));
    await writeFile(
      join(dir, 'npy', 'transfer.npy'),
      encodeNpy(
        Float32Array.from(train.pixels, (v) => v / 255),
        [200, SIDE, SIDE],
      ),
    );
    await writeFile(join(dir, 'npy', 'x.npy'), encodeNpy(test.pixels, [80, SIDE, SIDE, 1]));
    await writeFile(
      join(dir, 'npy', 'y.npy'),
      encodeNpy(
        BigInt64Array.from(test.labels, (l) => BigInt(l)),
        [80],
      ),
    );
    // An image folder, one sub-folder per class.
    for (let c = 0; c < CLASSES; c++) await mkdir(join(dir, 'folder', `class-${c}`), { recursive: true });
    for (let r = 0; r < 40; r++) {
      const pixels = Buffer.from(test.pixels.subarray(r * FEATURES, (r + 1) * FEATURES));
      await sharp(pixels, { raw: { width: SIDE, height: SIDE, channels: 1 } })
        .png()
        .toFile(join(dir, 'folder', `class-${test.labels[r]}`, `${r}.png`));
    }
  });

  after(async () => {
    await new Promise((resolve) => stub.server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the same images from IDX, .npy and an image folder', async () => {
    const fromIdx = await loadExternalImages(join(dir, 't10k-images-idx3-ubyte'), { requireLabels: true, classes: CLASSES });
    const fromNpy = await loadExternalImages(join(dir, 'npy', 'x.npy'), { requireLabels: true, classes: CLASSES });
    const folder = await loadExternalImages(join(dir, 'folder'), { requireLabels: true, classes: CLASSES, imageShape: [SIDE, SIDE, 1] });
    const gz = await loadExternalImages(join(dir, 'train-images-idx3-ubyte.gz'));
    const floats = await loadExternalImages(join(dir, 'npy', 'transfer.npy'));
    assert.deepEqual(fromNpy.x, fromIdx.x);
    assert.deepEqual(fromNpy.labels, fromIdx.labels);
    assert.equal(gz.rows, 200);
    assert.ok(gz.x.every((v, i) => Math.abs(v - floats.x[i]) < 1e-6));
    assert.equal(folder.rows, 40);
    assert.deepEqual(folder.classNames, ['class-0', 'class-1', 'class-2', 'class-3']);
    // Folder order: class by class, files sorted by name; every image decodes to its IDX row.
    for (let r = 0; r < folder.rows; r++) {
      const row = folder.x.subarray(r * FEATURES, (r + 1) * FEATURES);
      const match = Array.from({ length: 40 }, (_, i) => i).find(
        (i) => fromIdx.labels![i] === folder.labels![r] && fromIdx.x.subarray(i * FEATURES, (i + 1) * FEATURES).every((v, f) => Math.abs(v - row[f]) < 1e-6),
      );
      assert.ok(match !== undefined, `folder image ${r} matches no test image of its class`);
    }
    const npy = parseNpy(encodeNpy(Float64Array.from([1.5, -2]), [2]), 'x.npy');
    assert.deepEqual(Array.from(npy.data), [1.5, -2]);
  });

  for (const [protocol, format, policy] of [
    ['kserve-v2', 'idx', 'random'],
    ['tf-serving', 'npy', 'jbself'],
    ['json-path', 'folder', 'jbtop3'],
  ] as [ExternalProtocol, string, PolicyName][]) {
    it(`${protocol} target, ${format} data, ${policy} attacker: exact budget, defender columns against the reference`, async (t) => {
      const out = await mkdtemp(join(tmpdir(), 'msd-external-out-'));
      t.after(() => rm(out, { recursive: true, force: true }));
      const path = { 'kserve-v2': '/v2/models/m/infer', 'tf-serving': '/v1/models/m:predict', 'json-path': '/predict' }[protocol];
      const client = (suffix: string) =>
        externalClient({
          protocol,
          url: `${stub.base}${path}${suffix}`,
          inputShape: protocol === 'tf-serving' ? [SIDE, SIDE, 1] : undefined,
          requestTemplate: '{"payload": {"images": "$INPUTS"}}',
          answerPath: 'result.items[*].scores',
        });
      const data = {
        idx: [join(dir, 'train-images-idx3-ubyte.gz'), join(dir, 't10k-images-idx3-ubyte')],
        npy: [join(dir, 'npy', 'transfer.npy'), join(dir, 'npy', 'x.npy')],
        folder: [join(dir, 'train-images-idx3-ubyte.gz'), join(dir, 'folder')],
      }[format]!;
      const test = await loadExternalImages(data[1], { requireLabels: true, classes: CLASSES, imageShape: [SIDE, SIDE, 1] });
      const transfer = await loadExternalImages(data[0], { features: test.features });
      const quick = presetConfig('quick');
      const before = stub.requests();
      const target = client('?defended');
      const reference = client('');
      const result = await evaluateExternal({
        name: 'stub',
        target,
        targetUrl: `${stub.base}${path}?defended`,
        reference,
        referenceUrl: `${stub.base}${path}`,
        transfer,
        test: test as typeof test & { labels: Int32Array },
        classes: CLASSES,
        policies: [policy],
        budgets: [150],
        attackerLabels: ['soft'],
        knockoff: { ...quick.knockoffTraining, epochs: 2, batchSize: 32 },
        adaptive: quick.adaptive,
        jbda: { ...quick.jbda, seedSize: 30, roundEpochs: 1 },
        smoothing: quick.smoothing,
        restorer: quick.restorer,
        surrogateArch: 'mlp',
        misinformation: quick.misinformationTraining,
        requestRows: 64,
        seed: 1,
        outDir: out,
      });
      // The same attacker against the target and, as the undefended "none" row, the reference.
      assert.deepEqual(
        result.records.map((r) => r.defense),
        ['target', 'none'],
      );
      const [record, undefendedRun] = result.records;
      assert.equal(record.queries, 150);
      assert.equal(undefendedRun.queries, 150);
      assert.equal(record.attacker, policy === 'random' ? 'knockoff-random' : policy);
      assert.equal(stub.requests() - before, target.requests + reference.requests, 'target requests plus the reference pass and its attack');
      assert.equal(reference.requests - Math.ceil(test.rows / 64), target.requests - Math.ceil(test.rows / 64), 'the same attack against both');
      assert.ok(record.victimAccuracy > 0.9, `reference accuracy ${record.victimAccuracy}`);
      assert.equal(record.defender.accuracy, record.victimAccuracy, 'the stub defense keeps the top-1');
      assert.equal(record.defender.top1ChangeRate, 0);
      assert.ok(record.defender.l1Mean > 0.1, `L1 ${record.defender.l1Mean}`);
    });
  }

  it('the adaptive attackers against the target (told its defense) and the same attackers against the reference', async (t) => {
    const out = await mkdtemp(join(tmpdir(), 'msd-external-adaptive-'));
    t.after(() => rm(out, { recursive: true, force: true }));
    const test = await loadExternalImages(join(dir, 't10k-images-idx3-ubyte'), { requireLabels: true, classes: CLASSES });
    const transfer = await loadExternalImages(join(dir, 'train-images-idx3-ubyte.gz'), { features: test.features });
    const quick = presetConfig('quick');
    const url = `${stub.base}/v2/models/m/infer`;
    const options = {
      name: 'stub-adaptive',
      target: externalClient({ protocol: 'kserve-v2', url: `${url}?rs=1` }),
      targetUrl: `${url}?rs=1`,
      targetDefense: RS_SPEC,
      reference: externalClient({ protocol: 'kserve-v2', url }),
      referenceUrl: url,
      transfer,
      test: test as typeof test & { labels: Int32Array },
      classes: CLASSES,
      policies: ['random', 'smoothing', 'restorer', 'inversion'] as PolicyName[],
      budgets: [90],
      seeds: 2,
      attackerLabels: quick.attackerLabels,
      knockoff: { ...quick.knockoffTraining, epochs: 1, batchSize: 32 },
      adaptive: quick.adaptive,
      jbda: quick.jbda,
      smoothing: quick.smoothing,
      restorer: { ...quick.restorer, pairs: 300, epochs: 1, shadowEpochs: 1 },
      surrogateArch: 'mlp' as const,
      misinformation: quick.misinformationTraining,
      requestRows: 64,
      seed: 1,
      outDir: out,
      notes: ['training: test'],
    };
    const result = await evaluateExternal(options);
    const runs = (defense: string) => result.records.filter((r) => r.defense === defense).map((r) => `${r.policy}#${r.attackerSeed}`);
    // The target is named by its defense; the reference is the undefended row, without restorer or inversion.
    assert.deepEqual(runs('reverse-sigmoid'), ['random#0', 'random#1', 'smoothing#0', 'smoothing#1', 'restorer#0', 'restorer#1', 'inversion#0', 'inversion#1']);
    assert.deepEqual(runs('none'), ['random#0', 'random#1', 'smoothing#0', 'smoothing#1']);
    assert.ok(result.records.every((r) => r.queries === 90 && r.attackers.map((a) => a.labels).join() === 'soft,argmax'));
    assert.ok(result.records.find((r) => r.policy === 'restorer')!.restorer!.heldOut > 0);
    const html = await readFile(result.files.html, 'utf8');
    assert.match(html, /What does the best attacker still get\?/);
    assert.match(html, /<td>reverse-sigmoid beta=0\.5,gamma=0\.2<\/td>/);
    assert.match(html, /training: test/);
    // Without the defense's spec, the defense-aware attackers cannot run: said before any query.
    const before = stub.requests();
    await assert.rejects(evaluateExternal({ ...options, targetDefense: undefined }), /restorer, inversion know the target's defense .*--target-defense/);
    await assert.rejects(evaluateExternal({ ...options, targetDefense: 'mad:eps=0.5' }), /inversion: .*no closed-form inverse/);
    assert.equal(stub.requests(), before);
  });

  it('msd eval --target: the grid’s training engine, named, without TF.js’s node-backend banner; --target-defense checked', async (t) => {
    const out = await mkdtemp(join(tmpdir(), 'msd-external-cli-'));
    t.after(() => rm(out, { recursive: true, force: true }));
    const url = `${stub.base}/v2/models/m/infer`;
    const common = [
      'eval',
      '--target',
      `${url}?rs=1`,
      '--transfer',
      join(dir, 'train-images-idx3-ubyte.gz'),
      '--test',
      join(dir, 't10k-images-idx3-ubyte'),
      '--classes',
      '4',
      '-q',
      '--out',
      out,
    ];
    const refused = await runCliAsync([...common, '--attackers', 'random,restorer']);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /--target-defense SPEC/);
    const badSpec = await runCliAsync([...common, '--target-defense', 'reverse-sigmoid:beta=-1']);
    assert.equal(badSpec.status, 2, badSpec.stderr);
    assert.match(badSpec.stderr, /--target-defense: reverse-sigmoid: parameter "beta"/);
    const ran = await runCliAsync([
      ...common,
      '--target-defense',
      RS_SPEC,
      '--reference',
      url,
      '--attackers',
      'random,inversion',
      '--budget',
      '60',
      '--knockoff-epochs',
      '1',
    ]);
    assert.equal(ran.status, 0, ran.stderr);
    assert.match(ran.stderr, /^training: (onnxruntime-node|tfjs wasm)/m);
    assert.doesNotMatch(ran.stderr + ran.stdout, /install our node backend/);
    assert.match(ran.stdout, /What does the best attacker still get\?/);
    const html = await readFile(join(out, 'report.html'), 'utf8');
    assert.match(html, /training: (onnxruntime-node|tfjs wasm)/);
  });

  it('bad data fails before any query, naming the file and the problem', async () => {
    const bad = join(dir, 'bad');
    await mkdir(join(bad, 'empty'), { recursive: true });
    await mkdir(join(bad, 'mixed', 'a'), { recursive: true });
    await writeFile(join(bad, 'mixed', 'a', 'notes.txt'), 'not an image');
    await writeFile(join(bad, 'junk-images-idx3-ubyte'), Buffer.from('hello world, not idx'));
    await writeFile(join(bad, 'x.npy'), encodeNpy(new Uint8Array(3 * FEATURES), [3, SIDE, SIDE]));
    await writeFile(join(bad, 'y.npy'), encodeNpy(Int32Array.from([0, 1]), [2]));
    await mkdir(join(bad, 'range'));
    await writeFile(join(bad, 'range', 'x.npy'), encodeNpy(new Uint8Array(2 * FEATURES), [2, SIDE, SIDE]));
    await writeFile(join(bad, 'range', 'y.npy'), encodeNpy(Int32Array.from([0, 7]), [2]));
    await writeFile(join(bad, 'flat.npy'), encodeNpy(new Uint8Array(FEATURES), [FEATURES]));
    const cases: [string, RegExp, object?][] = [
      [join(bad, 'missing.npy'), /missing\.npy: file not found/],
      [join(bad, 'junk-images-idx3-ubyte'), /junk-images-idx3-ubyte: not an IDX file/],
      [join(bad, 'x.npy'), /y\.npy: 2 labels for 3 images/],
      [join(bad, 'range', 'x.npy'), /y\.npy: label 7 at row 1 is outside 0\.\.3/],
      [join(bad, 'flat.npy'), /flat\.npy: .*wrong dimensions/],
      [join(bad, 'empty'), /empty: empty folder/],
      [join(bad, 'mixed'), /notes\.txt: not an image file/],
      [join(dir, 't10k-images-idx3-ubyte'), /images of 16 values, the endpoint takes 784/, { features: 784 }],
    ];
    for (const [path, message, extra] of cases) {
      await assert.rejects(
        loadExternalImages(path, { requireLabels: true, classes: CLASSES, ...extra }),
        (error: Error) => error instanceof DataFileError && message.test(error.message),
        path,
      );
    }
    // Through the command line: exit code 2, the problem on stderr, and no request reached the endpoint.
    const before = stub.requests();
    for (const [test, message] of [
      [join(bad, 'x.npy'), /y\.npy: 2 labels for 3 images/],
      [join(bad, 'empty'), /empty folder/],
    ] as const) {
      const result = await runCliAsync([
        'eval',
        '--target',
        `${stub.base}/v2/models/m/infer`,
        '--transfer',
        join(dir, 'train-images-idx3-ubyte.gz'),
        '--test',
        test,
        '--classes',
        '4',
        '-q',
      ]);
      assert.equal(result.status, 2, result.stderr);
      assert.match(result.stderr, message);
    }
    assert.equal(stub.requests(), before);
  });
});
