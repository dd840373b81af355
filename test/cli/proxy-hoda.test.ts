/**
 * HODA in `msd proxy`: --hoda-checkpoints loads the owner's checkpoints (listed model directories,
 * or one directory with checkpoints.bin), --hoda-calibration calibrates on held-out examples (.npy,
 * or an image folder read with the proxy's image preprocessing), and the detectors get each
 * request's hardness. Bad combinations are refused before anything loads, saying what to write.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { checkHodaFlags } from '../../src/cli/flags/hoda-flags.js';
import { proxyOptionsFromSettings } from '../../src/cli/commands/proxy.js';
import { resolveProxySettings } from '../../src/cli/config/proxy-config.js';
import { encodeNpy } from '../../src/eval/data/npy.js';
import { resolvePopulationOptions } from '../../src/detection/above/population.js';
import { checkpointRecorder, createModel, initBackend, saveCheckpoints, saveModel, tf } from '../../src/models/index.js';
import type { PopulationServingOptions } from '../../src/server/clients/options.js';
import { ServingOptionError } from '../../src/server/errors.js';
import { runCli } from '../helpers/run-cli.js';
import { scratchDir } from '../helpers/scratch.js';
import { startProxyCommand } from '../server/helpers/proxy-command.js';
import { startStubUpstream } from '../server/helpers/stub-upstream.js';

const WIDTH = 48; // 4×4×3 images
/** The held-out examples of held.npy. */
const HELD_OUT = Float32Array.from({ length: 300 * WIDTH }, (_, i) => ((i * 7919) % 1000) / 1000);
let dir: string;
const listed: string[] = [];

/** An MLP over 48 inputs whose labels differ by seed, so the checkpoints disagree on some rows. */
const mlp = (seed: number) => createModel({ arch: 'mlp', inputShape: [WIDTH], classes: 3, seed, hidden: [8] });

before(async () => {
  await initBackend({ log: () => {} });
  dir = await scratchDir('msd-hoda-');
  for (const seed of [1, 2, 3]) {
    const model = mlp(seed);
    const path = join(dir, `checkpoint-${seed}`);
    await saveModel(model, path);
    listed.push(path);
    model.dispose();
  }
  // This project's own format: one model directory with checkpoints.bin beside it.
  const model = mlp(4);
  const recorder = checkpointRecorder(model, 4);
  for (let step = 1; step <= 4; step++) {
    model.setWeights(mlp(10 + step).getWeights());
    recorder.onStep(step, 4);
  }
  await saveModel(model, join(dir, 'own'));
  await saveCheckpoints(join(dir, 'own'), recorder.checkpoints);
  model.dispose();
  await writeFile(join(dir, 'held.npy'), encodeNpy(HELD_OUT, [300, WIDTH]));
  for (const [c, count] of [
    [0, 60],
    [1, 60],
  ] as const) {
    await mkdir(join(dir, 'images', `class-${c}`), { recursive: true });
    for (let i = 0; i < count; i++) {
      const pixels = Buffer.from(Array.from({ length: WIDTH }, (_, k) => (i * 31 + k * 17 + c * 101) % 256));
      await writeFile(
        join(dir, 'images', `class-${c}`, `${i}.png`),
        await sharp(pixels, { raw: { width: 4, height: 4, channels: 3 } })
          .png()
          .toBuffer(),
      );
    }
  }
  await mkdir(join(dir, 'few'));
  await writeFile(
    join(dir, 'few', 'a.png'),
    await sharp(Buffer.alloc(WIDTH, 9), { raw: { width: 4, height: 4, channels: 3 } })
      .png()
      .toBuffer(),
  );
});
after(() => tf.disposeVariables());

const settings = (extra: Record<string, unknown>) => ({
  ...resolveProxySettings({ upstream: 'http://127.0.0.1:1', defense: 'rounding:decimals=2', logLevel: 'silent', ...extra }, undefined, {}),
  clientId: 'header:x-api-key',
  ...extra,
});

describe('msd proxy --hoda-checkpoints', () => {
  it('refuses bad combinations before loading anything, saying what to write', () => {
    const refused = (flags: Record<string, unknown>, message: RegExp) =>
      assert.throws(
        () => checkHodaFlags(flags),
        (e: unknown) => e instanceof ServingOptionError && message.test(e.message),
      );
    refused({ hodaCheckpoints: listed.join(','), hodaCalibration: 'x.npy' }, /needs --client-id/);
    refused({ clientId: 'header:k', hodaCalibration: 'x.npy' }, /need --hoda-checkpoints/);
    refused({ clientId: 'header:k', hodaCheckpoints: listed.join(','), hodaCalibration: 'x.npy', hodaEngine: 'torch' }, /--hoda-engine must be tfjs or onnx/);
    refused({ clientId: 'header:k', hodaCheckpoints: listed[0], hodaCalibration: 'x.npy' }, /holding checkpoints\.bin; otherwise list the checkpoints/);
    refused({ clientId: 'header:k', hodaCheckpoints: listed.join(',') }, /needs a calibration: --hoda-calibration PATH/);
    refused(
      {
        clientId: 'header:k',
        hodaCheckpoints: listed.join(','),
        hodaCalibration: 'x.npy',
        detection: '{"hoda":{"benignHistogram":[1,1,1],"thresholds":[{"length":100,"threshold":0.5}]}}',
      },
      /give one/,
    );
    // Half a calibration is still a calibration: --hoda-calibration would overwrite it.
    refused(
      {
        clientId: 'header:k',
        hodaCheckpoints: listed.join(','),
        hodaCalibration: 'x.npy',
        detection: '{"hoda":{"thresholds":[{"length":100,"threshold":0.5}]}}',
      },
      /give one/,
    );
    // Per-client HODA turned off is no calibration: --hoda-calibration may still serve population HODA.
    checkHodaFlags({ clientId: 'header:k', hodaCheckpoints: listed.join(','), hodaCalibration: 'x.npy', detection: '{"hoda":{"enabled":false}}' });
    checkHodaFlags({ clientId: 'header:k', hodaCheckpoints: listed.join(','), detection: '{"hoda":{"enabled":false}}' });
  });

  it('refuses checkpoints no detector reads, and a hoda that is not an object, in words', async () => {
    await assert.rejects(
      proxyOptionsFromSettings(settings({ hodaCheckpoints: listed.join(','), detection: '{"hoda":{"enabled":false}}' })),
      (e: unknown) => e instanceof ServingOptionError && /no detector would read the hardness/.test(e.message),
    );
    await assert.rejects(
      proxyOptionsFromSettings(
        settings({ hodaCheckpoints: listed.join(','), detection: '{"hoda":{"enabled":false}}', population: '{"hoda":{"enabled":false}}' }),
      ),
      (e: unknown) => e instanceof ServingOptionError && /no detector would read the hardness/.test(e.message),
    );
    for (const hoda of ['true', '"off"'])
      await assert.rejects(
        proxyOptionsFromSettings(settings({ hodaCheckpoints: listed.join(','), detection: `{"hoda":${hoda}}` })),
        (e: unknown) => !(e instanceof TypeError) && /hoda must be/.test((e as Error).message),
        hoda,
      );
  });

  it('keeps per-client HODA off when --detection says hoda.enabled false, and still calibrates population HODA', async () => {
    const options = await proxyOptionsFromSettings(
      settings({
        hodaCheckpoints: listed.join(','),
        hodaCalibration: join(dir, 'held.npy'),
        detection: '{"hoda":{"enabled":false}}',
        population: '{"minQueries":100}',
      }),
    );
    try {
      assert.match(
        options.hoda!.summary,
        /^HODA per client off \(hoda\.enabled false in --detection; 3 checkpoints .*\); population HODA calibrated on the same examples/,
      );
      assert.equal(options.detectionSetup!.detection.initialState(0).hoda, undefined, 'no per-client HODA state');
      assert.equal((options.clients!.population as PopulationServingOptions).hoda?.reference?.length, 3, 'population HODA calibrated');
    } finally {
      options.hoda?.dispose();
    }
  });

  it('calibrates on a .npy of held-out examples and gives the detectors each request’s hardness', async () => {
    const options = await proxyOptionsFromSettings(settings({ hodaCheckpoints: listed.join(','), hodaCalibration: join(dir, 'held.npy') }));
    try {
      assert.match(options.hoda!.summary, /HODA on \(3 checkpoints, calibrated on 300 held-out examples\)/);
      assert.equal(options.clients!.hardness, options.hoda!.hardness);
      const calibration = JSON.parse(options.hoda!.detection).hoda;
      assert.equal(calibration.benignHistogram.length, 3);
      assert.deepEqual(
        calibration.thresholds.map((t: { length: number }) => t.length),
        [100],
      );
      assert.ok(options.detectionSetup!.detection.initialState(0).hoda, 'the HODA detector is on');
      // The hardness of a row: the first checkpoint from which all later ones agree with the last.
      const rows = Float32Array.from({ length: 20 * WIDTH }, (_, i) => 4 * Math.sin(i * 12.9898 + Math.floor(i / WIDTH)));
      const hardness = await options.clients!.hardness!({ rows: 20, cols: WIDTH, data: rows });
      const labels = [1, 2, 3].map((seed) => {
        const model = mlp(seed);
        const predicted = tf.tidy(() => (model.predict(tf.tensor2d(rows, [20, WIDTH])) as tf.Tensor).argMax(-1).dataSync());
        model.dispose();
        return Array.from(predicted);
      });
      const expected = labels[0].map((_, r) => (labels[1][r] !== labels[2][r] ? 2 : labels[0][r] !== labels[2][r] ? 1 : 0));
      assert.deepEqual(Array.from(hardness), expected);
      assert.ok(new Set(expected).size > 1, 'the checkpoints disagree on some rows, so the check means something');
    } finally {
      options.hoda?.dispose();
    }
  });

  it('calibrates population detection’s HODA on the same examples, unless --population gives its own', async () => {
    const withPopulation = (population: string) =>
      proxyOptionsFromSettings(settings({ hodaCheckpoints: listed.join(','), hodaCalibration: join(dir, 'held.npy'), population }));
    const calibrated = await withPopulation('{"minQueries":100}');
    try {
      assert.match(
        calibrated.hoda!.summary,
        /HODA on \(3 checkpoints, calibrated on 300 held-out examples\); population HODA calibrated on the same examples \(max distance 0\.\d+ over windows of 100\)/,
      );
      const { hoda } = calibrated.clients!.population as PopulationServingOptions;
      assert.ok(hoda!.maxDistance! > 0 && hoda!.maxDistance! <= 0.99, String(hoda!.maxDistance));
      // The reference is the held-out examples' hardness histogram, as the detectors will see each request's.
      const hardness = await calibrated.hoda!.hardness({ rows: 300, cols: WIDTH, data: HELD_OUT });
      assert.deepEqual(
        hoda!.reference,
        [0, 1, 2].map((b) => Array.from(hardness).filter((h) => h === b).length / 300),
      );
      assert.ok(hoda!.reference.filter((v) => v > 0).length > 1, 'the checkpoints disagree on some held-out rows, so the histogram means something');
    } finally {
      calibrated.hoda?.dispose();
    }
    // Windows of the default minQueries (200) need 400 examples: off, and the start-up line says why.
    const tooFew = await withPopulation('{}');
    try {
      assert.match(tooFew.hoda!.summary, /population HODA off: 300 held-out examples, and windows of 200 \(population minQueries\) need at least 400/);
      assert.equal((tooFew.clients!.population as PopulationServingOptions).hoda, undefined);
    } finally {
      tooFew.hoda?.dispose();
    }
    const own = await withPopulation('{"minQueries":100,"hoda":{"reference":[0.5,0.3,0.2],"maxDistance":0.3}}');
    try {
      assert.match(own.hoda!.summary, /population HODA from --population/);
      assert.deepEqual((own.clients!.population as PopulationServingOptions).hoda, { reference: [0.5, 0.3, 0.2], maxDistance: 0.3 });
    } finally {
      own.hoda?.dispose();
    }
    // Turned off in --population: not calibrated, and the start-up line says so.
    const off = await withPopulation('{"minQueries":100,"hoda":{"enabled":false}}');
    try {
      assert.match(off.hoda!.summary, /; population HODA off \(--population sets hoda\.enabled false\)$/);
      const population = off.clients!.population as PopulationServingOptions;
      assert.deepEqual(population.hoda, { enabled: false });
      assert.equal(resolvePopulationOptions(population).hoda.enabled, false, 'options the population detector takes');
    } finally {
      off.hoda?.dispose();
    }
  });

  it('reads the project’s checkpoints.bin, and an image folder through the proxy’s image preprocessing', async () => {
    const options = await proxyOptionsFromSettings(
      settings({ hodaCheckpoints: join(dir, 'own'), hodaCalibration: join(dir, 'images'), imageSize: '4x4', imageScale: '1/255' }),
    );
    try {
      assert.match(options.hoda!.summary, /HODA on \(4 checkpoints, calibrated on 120 held-out examples\)/);
    } finally {
      options.hoda?.dispose();
    }
  });

  it('says what is wrong with the calibration data', async () => {
    const attempt = (extra: Record<string, unknown>) => proxyOptionsFromSettings(settings({ hodaCheckpoints: listed.join(','), ...extra }));
    await assert.rejects(attempt({ hodaCalibration: join(dir, 'missing.npy') }), /--hoda-calibration .*missing\.npy: file not found/);
    await assert.rejects(attempt({ hodaCalibration: join(dir, 'images') }), /is an image folder: declare the model’s image preprocessing \(--image-size/);
    await assert.rejects(
      attempt({ hodaCalibration: join(dir, 'few'), imageSize: '4x4', imageScale: '1/255' }),
      /1 examples, fewer than HODA’s shortest test \(100 queries\)/,
    );
    await assert.rejects(attempt({ hodaCalibration: join(dir, 'images'), imageSize: '2x2' }), /images decode to 12 values, the checkpoints take 48/);
  });

  it('runs from the command line: says HODA is on, answers through it, and exits 2 on a bad flag', async () => {
    const upstream = await startStubUpstream('tf-serving');
    const args = [
      '--upstream',
      upstream.url,
      '--protocol',
      'tf-serving',
      '--defense',
      'rounding:decimals=1',
      '--client-id',
      'header:x-api-key',
      '--hoda-checkpoints',
      listed.join(','),
      '--hoda-calibration',
      join(dir, 'held.npy'),
    ];
    try {
      const { url, stop, waitFor } = await startProxyCommand(args);
      try {
        assert.match(await waitFor(/client detection/), /HODA on \(3 checkpoints, calibrated on 300 held-out examples\)/);
        const row = Array.from({ length: WIDTH }, (_, i) => (i % 7) / 7);
        const res = await fetch(`${url}/v1/models/mnist:predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-api-key': 'client-1' },
          body: JSON.stringify({ instances: [row, row] }),
        });
        assert.equal(res.status, 200, await res.clone().text());
        assert.equal(((await res.json()) as { predictions: number[][] }).predictions.length, 2);
      } finally {
        assert.equal(await stop(), 0);
      }
    } finally {
      await upstream.close();
    }
    const bad = runCli(['proxy', ...args.slice(0, 8), '--hoda-checkpoints', listed[0]]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /holding checkpoints\.bin/);
  });
});
