/**
 * `msd proxy`'s shadow settings: the --shadow-* flags and the config file's `shadow` object, checked
 * by the shadow's own parsers with errors that name the flag or the field; the held-out data read
 * as HODA's calibration is (IDX/.npy with their labels, or an image folder decoded with the
 * serving preprocessing, labelled by its class sub-folders); the start line says what runs.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import sharp from 'sharp';
import { readHeldOutRows } from '../../../src/cli/flags/held-out.js';
import { proxyOptionsFromSettings, proxySettingsFrom, shadowSettingsOf } from '../../../src/cli/commands/proxy.js';
import { resolveProxySettings } from '../../../src/cli/config/proxy-config.js';
import { encodeNpy } from '../../../src/eval/data/npy.js';
import { scratchDir } from '../../helpers/scratch.js';
import { startProxyCommand } from '../helpers/proxy-command.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

let dir: string;
let upstream: StubUpstream;

before(async () => {
  dir = await scratchDir('msd-shadow-');
  const x = Float32Array.from({ length: 30 * 4 }, (_, i) => (i % 7) / 7);
  await writeFile(join(dir, 'x.npy'), encodeNpy(x, [30, 4]));
  await writeFile(
    join(dir, 'y.npy'),
    encodeNpy(
      Int32Array.from({ length: 30 }, (_, i) => i % 3),
      [30],
    ),
  );
  await writeFile(
    join(dir, 'answers.npy'),
    encodeNpy(
      Float32Array.from({ length: 30 * 3 }, (_, i) => (i % 3 === 0 ? 0.8 : 0.1)),
      [30, 3],
    ),
  );
  await writeFile(
    join(dir, 'bad-answers.npy'),
    encodeNpy(
      Float32Array.from({ length: 30 * 3 }, () => 0.5),
      [30, 3],
    ),
  );
  await writeFile(join(dir, 'unlabelled.npy'), encodeNpy(x, [30, 4]));
  for (const name of ['cat', 'dog']) {
    await mkdir(join(dir, 'images', name), { recursive: true });
    for (let i = 0; i < 3; i++) {
      const pixels = Buffer.from(Array.from({ length: 12 }, (_, k) => (i * 40 + k * 9 + (name === 'dog' ? 100 : 0)) % 256));
      await writeFile(
        join(dir, 'images', name, `${i}.png`),
        await sharp(pixels, { raw: { width: 2, height: 2, channels: 3 } })
          .png()
          .toBuffer(),
      );
    }
  }
  await mkdir(join(dir, 'loose'));
  await writeFile(
    join(dir, 'loose', 'a.png'),
    await sharp(Buffer.alloc(12, 9), { raw: { width: 2, height: 2, channels: 3 } })
      .png()
      .toBuffer(),
  );
  upstream = await startStubUpstream('kserve-v2', undefined, { record: false });
});

after(async () => {
  await upstream?.close();
});

const settings = (flags: Record<string, unknown>, file?: Record<string, unknown>) =>
  resolveProxySettings({ upstream: 'http://127.0.0.1:1', ...flags }, file ? { name: 'proxy.json', values: file } : undefined, {});

describe('msd proxy: shadow settings', () => {
  it('is off without any shadow setting', () => {
    assert.equal(shadowSettingsOf(settings({})), undefined);
  });

  it('merges the config file’s shadow object with the flags, the flags winning', () => {
    const merged = shadowSettingsOf(
      settings({ shadowSample: '0.5', shadowEvery: '2000 samples' }, { shadow: { heldOut: 'x.npy', sample: 0.2, every: '5m', cpu: 0.1, epochs: 4 } }),
    );
    assert.deepEqual(merged, { heldOut: 'x.npy', sample: 0.5, every: { samples: 2000 }, cpu: 0.1, epochs: 4 });
    assert.deepEqual(shadowSettingsOf(settings({ shadow: '{"heldOut": "x.npy", "arch": "cnn"}', shadowCpu: '0.5' })), {
      heldOut: 'x.npy',
      arch: 'cnn',
      cpu: 0.5,
    });
  });

  it('refuses bad values, naming the flag or the file’s field and saying what to write', () => {
    assert.throws(() => settings({ shadowSample: '2' }), /--shadow-sample must be a number in \(0, 1\], e\.g\. 0\.1, got "2"/);
    assert.throws(
      () => settings({ shadowEvery: '300' }),
      /--shadow-every must be a time such as "300s", "5m" or "1h", or a count of new samples such as "2000 samples"/,
    );
    assert.throws(() => settings({ shadowArch: 'victim.onnx' }), /--shadow-arch: an ONNX file cannot be trained here/);
    assert.throws(() => settings({ shadowCpu: '0' }), /--shadow-cpu must be a number in \(0, 1\]/);
    assert.throws(
      () => settings({}, { shadow: { heldOut: 'x.npy', smaple: 0.1 } }),
      /config file proxy\.json: "shadow\.smaple" is not a shadow setting; allowed: heldOut, heldOutAnswers, sample/,
    );
    assert.throws(() => settings({}, { shadow: { heldOut: 'x.npy', every: 60 } }), /config file proxy\.json: "shadow\.every" must be a time/);
    assert.throws(() => settings({}, { shadow: ['x.npy'] }), /config file proxy\.json: "shadow" must be an object/);
    assert.throws(
      () => settings({}, { shadowSample: 0.1 }),
      /config file proxy\.json: "shadowSample" is written inside the shadow object: shadow: \{ sample: \.\.\. \}/,
    );
    assert.throws(() => settings({ shadow: '{bad' }), /--shadow must be a JSON object/);
    assert.throws(
      () => shadowSettingsOf(settings({ shadowSample: '0.1' })),
      /needs labelled held-out data to score its knockoffs on: pass --shadow-held-out PATH/,
    );
  });

  it('reads the held-out data and the model’s answers on it into the proxy’s options; refuses unlabelled data and answers that are not probabilities', async () => {
    const flags = {
      upstream: upstream.url,
      defense: 'rounding:decimals=2',
      shadowHeldOut: join(dir, 'x.npy'),
      shadowHeldOutAnswers: join(dir, 'answers.npy'),
      shadowSample: '0.5',
    };
    const options = await proxyOptionsFromSettings(await proxySettingsFrom(flags));
    assert.equal(options.shadow?.sample, 0.5);
    assert.equal(options.shadow?.heldOut.rows, 30);
    assert.deepEqual(Array.from(options.shadow!.heldOut.labels).slice(0, 4), [0, 1, 2, 0]);
    assert.equal(options.shadow?.heldOut.answers?.length, 90);
    await assert.rejects(
      proxyOptionsFromSettings(await proxySettingsFrom({ ...flags, shadowHeldOutAnswers: join(dir, 'bad-answers.npy') })),
      /row 0 sums to 1\.500; give the model’s probabilities/,
    );
    await assert.rejects(
      proxyOptionsFromSettings(await proxySettingsFrom({ ...flags, shadowHeldOut: join(dir, 'unlabelled.npy'), shadowHeldOutAnswers: undefined })),
      /--shadow-held-out: .*no labels/,
    );
    await assert.rejects(
      proxyOptionsFromSettings(await proxySettingsFrom({ ...flags, shadowHeldOut: join(dir, 'missing.npy') })),
      /--shadow-held-out .*missing\.npy: file not found/,
    );
  });

  it('reads an image folder with the serving preprocessing, labelled by its sorted class sub-folders', async () => {
    const held = await readHeldOutRows(join(dir, 'images'), {
      flag: '--shadow-held-out',
      inputs: { image: { width: 2, height: 2, scale: 1 / 255 } },
      requireLabels: true,
    });
    assert.equal(held.rows, 6);
    assert.equal(held.features, 12);
    assert.deepEqual(Array.from(held.labels!), [0, 0, 0, 1, 1, 1]);
    assert.ok(held.x.every((v) => v >= 0 && v <= 1));
    await assert.rejects(readHeldOutRows(join(dir, 'images'), { flag: '--shadow-held-out' }), /is an image folder: declare the model’s image preprocessing/);
    await assert.rejects(
      readHeldOutRows(join(dir, 'loose'), { flag: '--shadow-held-out', inputs: { image: { width: 2, height: 2 } }, requireLabels: true }),
      /labels come from class sub-folders/,
    );
  });

  it('says on its start line what runs', async () => {
    const proxy = await startProxyCommand([
      '--upstream',
      upstream.url,
      '--defense',
      'rounding:decimals=2',
      '--shadow-held-out',
      join(dir, 'x.npy'),
      '--shadow-sample',
      '0.5',
      '--shadow-every',
      '2000 samples',
      '--shadow-cpu',
      '0.2',
      '--shadow-min-protection',
      '0.05',
      '--metrics-public',
      '--log-level',
      'silent',
    ]);
    try {
      const line = await proxy.waitFor(/shadow attacker: .*\n/);
      assert.match(
        line,
        /proxy: shadow attacker: samples 50% of answered requests \(at most 4000 rows a tier, 20% held back\), trains knockoffs on the defended and on the original answers \(an MLP for flat inputs, a small CNN \(lenet\) for images; 10 epochs\) every 2000 new sampled rows, in a worker thread on ≤ 20% of one core, scored on 30 held-out rows \(.*x\.npy.*\); alert under 0\.05 protection/,
      );
      await request(proxy.url)
        .post('/v2/models/m/infer')
        .send({ inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] }] })
        .expect(200);
      const metrics = (await request(proxy.url).get('/metrics').expect(200)).text;
      assert.match(metrics, /^msd_shadow_protection_min_ratio 0\.05$/m);
    } finally {
      assert.equal(await proxy.stop(), 0);
    }
  });
});
