import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inputOptionsFromFlags } from '../../src/cli/flags/image-flags.js';
import { ServingOptionError } from '../../src/server/errors.js';
import { resolveInputOptions } from '../../src/server/inputs/index.js';
import { runCli } from '../helpers/run-cli.js';

describe('image input flags', () => {
  it('translate into the inputs option', () => {
    const inputs = inputOptionsFromFlags({
      imageSize: '224x160',
      imageResize: 'cover',
      imageChannels: 'bgr',
      imageLayout: 'nchw',
      imageScale: '1/255',
      imageMean: '0.485,0.456,0.406',
      imageStd: '0.5',
      imageStrictChannels: true,
      maxPixels: '1000000',
      maxImageBytes: '65536',
      inputScale: '0.5',
    });
    assert.deepEqual(inputs, {
      numericScale: 0.5,
      maxPixels: 1_000_000,
      maxImageBytes: 65536,
      image: {
        width: 224,
        height: 160,
        resize: 'cover',
        channels: 'bgr',
        layout: 'nchw',
        scale: 1 / 255,
        mean: [0.485, 0.456, 0.406],
        std: 0.5,
        strictChannels: true,
      },
    });
    assert.equal(resolveInputOptions(inputs).image?.std.length, 3, 'and pass the option check');
    assert.equal(inputOptionsFromFlags({}), undefined);
  });

  it('translate the request limits on images (side, pixel budget, concurrent decodes)', () => {
    const inputs = inputOptionsFromFlags({ maxImageSide: '8192', maxRequestPixels: '5000000', maxConcurrentDecodes: '2' });
    assert.deepEqual(inputs, { maxImageSide: 8192, maxRequestPixels: 5_000_000, maxConcurrentDecodes: 2 });
    const resolved = resolveInputOptions(inputs);
    assert.deepEqual([resolved.maxImageSide, resolved.maxRequestPixels, resolved.maxConcurrentDecodes], [8192, 5_000_000, 2]);
    for (const [flags, message] of [
      [{ maxImageSide: '0' }, /--max-image-side must be a positive integer, got "0"/],
      [{ maxRequestPixels: '1e9x' }, /--max-request-pixels must be a positive integer/],
      [{ maxConcurrentDecodes: '1.5' }, /--max-concurrent-decodes must be a positive integer/],
    ] as const) {
      assert.throws(
        () => inputOptionsFromFlags(flags),
        (e: Error) => e instanceof ServingOptionError && message.test(e.message),
        JSON.stringify(flags),
      );
    }
  });

  it('msd proxy takes --max-request-pixels and refuses a bad --max-image-side, exiting 2', () => {
    const result = runCli(['proxy', '--upstream', 'http://127.0.0.1:9', '--max-request-pixels', '1000', '--max-image-side', '70000', '--port', '0']);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /proxy: inputs: maxImageSide must be an integer from 1 to 65535, got 70000/);
  });

  it('refuse bad values, naming the flag', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ imageSize: '224' }, /--image-size must be WIDTHxHEIGHT such as 224x224, got "224"/],
      [{ imageResize: 'cover' }, /--image-resize need\(s\) --image-size/],
      [{ imageSize: '2x2', imageScale: 'half' }, /--image-scale must be a number or a fraction such as 1\/255, got "half"/],
      [{ maxPixels: '-3' }, /--max-pixels must be a positive integer/],
      [{ inputScale: '0' }, /--input-scale must be a positive number/],
    ];
    for (const [flags, message] of bad)
      assert.throws(
        () => inputOptionsFromFlags(flags),
        (e: Error) => e instanceof ServingOptionError && message.test(e.message),
        JSON.stringify(flags),
      );
  });

  it('msd proxy exits 2 with the option check’s message on a bad image declaration', () => {
    const result = runCli(['proxy', '--upstream', 'http://127.0.0.1:9', '--image-size', '224x224', '--image-resize', 'crop', '--port', '0']);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /proxy: inputs: image.resize must be one of "stretch", "cover", "contain", got "crop"/);
  });
});
