import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { ServingOptionError } from '../../../src/server/errors.js';
import { createInputReader, resolveInputOptions, type ImageInputOptions, type InputOptions } from '../../../src/server/inputs/index.js';
import { jsonPathCodec, kserveV2Codec, tfServingCodec, type EncodedImages, type InputRows, type RequestInputs } from '../../../src/server/protocols/index.js';
import { b64, encode, grayPng, pngDeclaring, solidPng, stripes, type Rgb } from '../helpers/images.js';

const reader = (options: InputOptions) => createInputReader(resolveInputOptions(options));
const read = (options: InputOptions, inputs: RequestInputs): Promise<InputRows> => Promise.resolve().then(() => reader(options)(inputs));
const images = (...texts: string[]): RequestInputs => ({ kind: 'encoded-images', rows: texts.length, images: texts, where: 'the test' });
const rgb = (width: number, height: number, over: Partial<ImageInputOptions> = {}): InputOptions => ({ image: { width, height, ...over } });

/** Pixel (x, y) of an NHWC RGB row. */
const pixel = (rows: InputRows, x: number, y: number, width: number, row = 0): number[] =>
  Array.from(rows.data.subarray(row * rows.cols + (y * width + x) * 3, row * rows.cols + (y * width + x) * 3 + 3));
const near = (got: number[], want: Rgb, tolerance: number, what: string) =>
  assert.ok(
    got.every((v, i) => Math.abs(v - want[i]) <= tolerance),
    `${what}: ${got} vs ${want}`,
  );

const RED: Rgb = [220, 20, 20];
const GREEN: Rgb = [20, 200, 20];
const BLUE: Rgb = [20, 20, 220];
/** 40×20: columns 0–9 red, 10–29 green, 30–39 blue. */
const threeBands = () =>
  encode(
    stripes(40, 20, (x) => (x < 10 ? RED : x < 30 ? GREEN : BLUE)),
    40,
    20,
    'png',
  );

describe('inputs stage: decoding and resizing real images', () => {
  it('decodes PNG and JPEG of several sizes to the declared size', async () => {
    for (const [w, h] of [
      [31, 17],
      [224, 224],
      [300, 200],
    ] as const) {
      for (const format of ['png', 'jpeg'] as const) {
        const bytes = await encode(
          stripes(w, h, () => [200, 100, 50]),
          w,
          h,
          format,
        );
        const rows = await read(rgb(8, 6), images(b64(bytes)));
        assert.deepEqual([rows.rows, rows.cols, rows.shape], [1, 8 * 6 * 3, [6, 8, 3]], `${format} ${w}×${h}`);
        near(pixel(rows, 3, 3, 8), [200, 100, 50], format === 'png' ? 0 : 6, `${format} ${w}×${h} colour`);
      }
    }
  });

  it('stretch keeps all three bands, cover crops to the centre band, contain pads black', async () => {
    const text = b64(await threeBands());
    const stretch = await read(rgb(8, 8, { resize: 'stretch' }), images(text));
    near(pixel(stretch, 0, 4, 8), RED, 12, 'stretch left');
    near(pixel(stretch, 4, 4, 8), GREEN, 12, 'stretch middle');
    near(pixel(stretch, 7, 4, 8), BLUE, 12, 'stretch right');

    // Cover: 40×20 → 16×8, centre 8 columns = input columns 10–29, all green.
    const cover = await read(rgb(8, 8, { resize: 'cover' }), images(text));
    for (const x of [0, 7]) near(pixel(cover, x, 4, 8), GREEN, 12, `cover column ${x}`);

    // Contain: 40×20 → 8×4 in the middle rows 2–5; rows 0–1 and 6–7 are black padding.
    const contain = await read(rgb(8, 8, { resize: 'contain' }), images(text));
    for (const y of [0, 1, 6, 7]) for (const x of [0, 4, 7]) assert.deepEqual(pixel(contain, x, y, 8), [0, 0, 0], `padding at ${x},${y}`);
    near(pixel(contain, 0, 3, 8), RED, 30, 'contain left');
    near(pixel(contain, 4, 3, 8), GREEN, 12, 'contain middle');
    near(pixel(contain, 7, 3, 8), BLUE, 30, 'contain right');
  });

  it('applies channel order, layout, scale and mean/std as declared', async () => {
    const text = b64(await solidPng(5, 5, [200, 100, 50]));
    const options = rgb(2, 2, { channels: 'bgr', layout: 'nchw', scale: 1 / 255, mean: [0.5, 0.25, 0], std: [0.5, 0.5, 0.25] });
    const rows = await read(options, images(text));
    assert.deepEqual(rows.shape, [3, 2, 2]);
    const want = [(50 / 255 - 0.5) / 0.5, (100 / 255 - 0.25) / 0.5, 200 / 255 / 0.25];
    for (let k = 0; k < 3; k++)
      for (let p = 0; p < 4; p++) assert.ok(Math.abs(rows.data[k * 4 + p] - want[k]) < 1e-5, `channel ${k}: ${rows.data[k * 4 + p]} vs ${want[k]}`);
    const gray = await read(rgb(2, 2, { channels: 'grayscale' }), images(text));
    assert.deepEqual(gray.shape, [2, 2, 1]);
    assert.ok(Math.abs(gray.data[0] - (0.299 * 200 + 0.587 * 100 + 0.114 * 50)) < 1e-3, String(gray.data[0]));
  });

  it('converts a grayscale image for an RGB model by default, and refuses it with strictChannels', async () => {
    const text = b64(await grayPng(6, 6, 90));
    const converted = await read(rgb(3, 3), images(text));
    near(pixel(converted, 1, 1, 3), [90, 90, 90], 0, 'grey becomes R = G = B');
    await assert.rejects(read(rgb(3, 3, { strictChannels: true }), images(text)), /has 1 colour channel \(grayscale\); the model takes 3 colour channels/);
    const colour = b64(await solidPng(4, 4, RED));
    await assert.rejects(
      read(rgb(3, 3, { channels: 'grayscale', strictChannels: true }), images(colour)),
      (e: Error & { status?: number }) => e.status === 400 && /has 3 colour channels; the model takes 1 colour channel/.test(e.message),
    );
  });

  it('reads a 16-bit PNG as 8-bit sRGB', async () => {
    const png16 = await sharp(new Uint16Array(4 * 4 * 3).fill(40_000), { raw: { width: 4, height: 4, channels: 3 } })
      .toColourspace('rgb16')
      .png()
      .toBuffer();
    const rows = await read(rgb(2, 2), images(b64(png16)));
    near(pixel(rows, 1, 1, 2), [156, 156, 156], 1, '40000 / 257');
  });

  it('decodes a batch in order, and accepts a data: URL', async () => {
    const texts = [b64(await solidPng(3, 3, RED)), `data:image/png;base64,${b64(await solidPng(3, 3, BLUE))}`];
    const rows = await read(rgb(2, 2), images(...texts));
    assert.equal(rows.rows, 2);
    near(pixel(rows, 0, 0, 2, 0), RED, 0, 'row 0');
    near(pixel(rows, 0, 0, 2, 1), BLUE, 0, 'row 1');
  });
});

describe('inputs stage: bad images are the client’s fault (400 naming the problem)', async () => {
  const png = await solidPng(8, 8, RED);
  const jpeg = await encode(
    stripes(64, 64, (x) => [x * 4, 100, 50]),
    64,
    64,
    'jpeg',
  );
  const cases: [string, string, RegExp, number][] = [
    ['not an image', Buffer.from('hello, this is text').toString('base64'), /is not an image \(not JPEG, PNG or WebP/, 400],
    ['an SVG', Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>').toString('base64'), /is not an image/, 400],
    ['a truncated JPEG', b64(jpeg.subarray(0, jpeg.length >> 1)), /is truncated or corrupt/, 400],
    ['a truncated PNG', b64(png.subarray(0, png.length - 20)), /is truncated or corrupt/, 400],
    [
      'a PNG declaring 100000×100000 pixels',
      b64(await pngDeclaring(100_000, 100_000)),
      /is 100000×100000 = 10000000000 pixels, over the limit of 24000000/,
      400,
    ],
    ['bad base64', 'iVBORw0KGgo!!!', /is not valid base64/, 400],
    ['base64 with a misplaced padding', 'ab=c', /is not valid base64/, 400],
    ['an empty string', '', /is empty/, 400],
  ];
  for (const [what, text, message, status] of cases) {
    it(`refuses ${what}`, async () => {
      await assert.rejects(read(rgb(4, 4), images(text)), (e: Error & { status?: number }) => {
        assert.equal(e.status, status, e.message);
        assert.match(e.message, message);
        return true;
      });
    });
  }

  it('refuses an image over maxImageBytes with 413 before decoding, and one over maxPixels', async () => {
    const big = b64(
      await encode(
        stripes(64, 64, (x) => [x, x, x]),
        64,
        64,
        'png',
      ),
    );
    await assert.rejects(
      read({ ...rgb(4, 4), maxImageBytes: 100 }, images(big)),
      (e: Error & { status?: number }) => e.status === 413 && /over the limit of 100 bytes per image/.test(e.message),
    );
    await assert.rejects(read({ ...rgb(4, 4), maxPixels: 63 * 64 }, images(big)), /64×64 = 4096 pixels, over the limit of 4032/);
  });

  it('names the image of a batch that is bad, and refuses images when no preprocessing is declared', async () => {
    await assert.rejects(read(rgb(4, 4), images(b64(png), 'QUJD')), /image 1 of the test is not an image/);
    await assert.rejects(read({}, images(b64(png))), /declares no image preprocessing/);
  });
});

describe('inputs stage: numeric tensors', () => {
  const kserve = (shape: number[], data: number[]) => kserveV2Codec().readInputs({ inputs: [{ name: 'x', shape, datatype: 'FP32', data }] });
  it('passes NHWC through without a copy and transposes NCHW to the declared layout', async () => {
    const nhwcData = [0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32];
    const nchwData = [0, 10, 20, 30, 1, 11, 21, 31, 2, 12, 22, 32];
    const asNhwc = rgb(2, 2);
    const fromNhwc = reader(asNhwc)(kserve([1, 2, 2, 3], nhwcData)) as InputRows;
    assert.ok(!(fromNhwc instanceof Promise), 'numeric inputs are read synchronously');
    assert.deepEqual(Array.from(fromNhwc.data), nhwcData);
    assert.deepEqual(Array.from((await read(asNhwc, kserve([1, 3, 2, 2], nchwData))).data), nhwcData, 'NCHW → NHWC');
    const asNchw = rgb(2, 2, { layout: 'nchw' });
    const fromNhwcToNchw = await read(asNchw, kserve([1, 2, 2, 3], nhwcData));
    assert.deepEqual([Array.from(fromNhwcToNchw.data), fromNhwcToNchw.shape], [nchwData, [3, 2, 2]], 'NHWC → NCHW');
    assert.deepEqual(Array.from((await read(asNchw, kserve([1, 12], nchwData))).data), nchwData, 'flat rows are taken as declared');
    // TF Serving nested instances carry their shape too.
    const nested = tfServingCodec().readInputs({
      instances: [
        [
          [
            [0, 10],
            [20, 30],
          ],
          [
            [1, 11],
            [21, 31],
          ],
          [
            [2, 12],
            [22, 32],
          ],
        ],
      ],
    });
    assert.deepEqual(Array.from((await read(asNhwc, nested)).data), nhwcData, 'nested NCHW instance → NHWC');
  });

  it('refuses a numeric tensor of another shape than declared, and scales by numericScale', async () => {
    await assert.rejects(read(rgb(2, 2), kserve([1, 5, 2, 2], new Array(20).fill(0))), /have 20 values \(shape \[5, 2, 2\]\); the model takes \[2, 2, 3\]/);
    await assert.rejects(
      read(rgb(2, 3), kserve([1, 3, 1, 6], new Array(18).fill(0))),
      /examples of shape \[3, 1, 6\]; the model takes \[3, 2, 3\] \(nhwc\) or \[3, 3, 2\] \(nchw\)/,
    );
    const scaled = reader({ numericScale: 0.5 })(kserve([1, 2], [2, 4])) as InputRows;
    assert.deepEqual(Array.from(scaled.data), [1, 2]);
    const plain = kserve([1, 2], [2, 4]);
    assert.equal(reader({})(plain), plain, 'nothing declared: the same object');
  });
});

describe('codecs find encoded images', () => {
  it('KServe V2: a BYTES tensor of shape [B] or [B, 1]', () => {
    const found = kserveV2Codec().readInputs({ inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: ['AAAA', 'BBBB'] }] });
    assert.deepEqual(found, { kind: 'encoded-images', rows: 2, images: ['AAAA', 'BBBB'], where: 'input "image"' });
    const nested = kserveV2Codec().readInputs({ inputs: [{ name: 'image', shape: [2, 1], datatype: 'BYTES', data: [['AAAA'], ['BBBB']] }] });
    assert.deepEqual((nested as EncodedImages).images, ['AAAA', 'BBBB']);
    assert.throws(
      () => kserveV2Codec().readInputs({ inputs: [{ name: 'image', shape: [1, 2], datatype: 'BYTES', data: ['A', 'B'] }] }),
      /shape \[batch\] or \[batch, 1\]/,
    );
    assert.throws(
      () => kserveV2Codec().readInputs({ inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: ['A'] }] }),
      /has 1 elements but shape \[2\] needs 2/,
    );
    assert.throws(
      () => kserveV2Codec().readInputs({ inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: ['A', 3] }] }),
      /input row 1 is not an encoded image/,
    );
  });

  it('TF Serving: {"b64"} instances, {"b64"} under inputKey, and columnar inputs', () => {
    const plain = tfServingCodec().readInputs({ instances: [{ b64: 'AAAA' }, { b64: 'BBBB' }] });
    assert.deepEqual((plain as EncodedImages).images, ['AAAA', 'BBBB']);
    const keyed = tfServingCodec({ inputKey: 'image' }).readInputs({ instances: [{ image: { b64: 'AAAA' }, id: 1 }] });
    assert.deepEqual((keyed as EncodedImages).images, ['AAAA']);
    const columnar = tfServingCodec().readInputs({ inputs: { image: [{ b64: 'CCCC' }] } });
    assert.deepEqual((columnar as EncodedImages).images, ['CCCC']);
    assert.throws(
      () => tfServingCodec().readInputs({ instances: [{ b64: 'AAAA' }, [1, 2]] }),
      /input row 1 is not an encoded image like row 0 \(write \{"b64"/,
    );
    assert.throws(() => tfServingCodec().readInputs({ instances: ['AAAA'] }), /write \{"b64": "<base64 JPEG or PNG>"\}/);
  });

  it('json-path: a base64 string, a list of them, or one per [*] match', () => {
    assert.deepEqual((jsonPathCodec({ probsPath: 'p', inputsPath: 'image' }).readInputs({ image: 'AAAA' }) as EncodedImages).images, ['AAAA']);
    assert.deepEqual((jsonPathCodec({ probsPath: 'p', inputsPath: 'images' }).readInputs({ images: ['AAAA', 'BBBB'] }) as EncodedImages).images, [
      'AAAA',
      'BBBB',
    ]);
    assert.deepEqual(
      (jsonPathCodec({ probsPath: 'p', inputsPath: 'items[*].photo' }).readInputs({ items: [{ photo: 'AAAA' }, { photo: 'BBBB' }] }) as EncodedImages).images,
      ['AAAA', 'BBBB'],
    );
    assert.throws(
      () => jsonPathCodec({ probsPath: 'p', inputsPath: 'images' }).readInputs({ images: ['AAAA', 7] }),
      /"images": input row 1 is not an encoded image/,
    );
  });
});

describe('inputs option validation', () => {
  const bad: [unknown, RegExp][] = [
    [{ image: { width: 224 } }, /image.height must be an integer from 1 to 16384, got undefined/],
    [{ image: { width: 0, height: 2 } }, /image.width must be an integer from 1/],
    [{ image: { width: 2, height: 2, resize: 'crop' } }, /image.resize must be one of "stretch", "cover", "contain", got "crop"/],
    [{ image: { width: 2, height: 2, channels: 'rgba' } }, /image.channels must be one of "rgb", "bgr", "grayscale"/],
    [{ image: { width: 2, height: 2, layout: 'chw' } }, /image.layout must be one of "nhwc", "nchw"/],
    [{ image: { width: 2, height: 2, scale: -1 } }, /image.scale must be a positive number such as 0.00392156862745098/],
    [{ image: { width: 2, height: 2, mean: [0.5, 0.5] } }, /image.mean must be one number or 3 finite numbers .* e.g. \[0.485, 0.456, 0.406\]/],
    [{ image: { width: 2, height: 2, std: [1, 0, 1] } }, /image.std must be one number or 3 finite positive numbers/],
    [{ image: { width: 2, height: 2, channels: 'grayscale', mean: [0.5, 0.5, 0.5] } }, /image.mean must be one finite number/],
    [{ image: { width: 2, height: 2, size: 3 } }, /unknown image option\(s\) size; allowed: width, height/],
    [{ maxPixels: 1.5 }, /maxPixels must be an integer/],
    [{ numericScale: 0 }, /numericScale must be a positive number/],
    [{ imag: {} }, /unknown option\(s\) imag/],
  ];
  for (const [options, message] of bad) {
    it(`refuses ${JSON.stringify(options)}`, () => {
      assert.throws(
        () => resolveInputOptions(options as InputOptions),
        (e: Error) => e instanceof ServingOptionError && e.message.startsWith('inputs: ') && message.test(e.message),
      );
    });
  }

  it('fills defaults and spreads one mean/std number over the channels', () => {
    const resolved = resolveInputOptions({ image: { width: 3, height: 2, mean: 0.5, std: 0.25 } });
    assert.deepEqual(resolved.image, {
      width: 3,
      height: 2,
      resize: 'stretch',
      channels: 'rgb',
      layout: 'nhwc',
      scale: 1,
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
      strictChannels: false,
    });
    assert.deepEqual([resolved.maxPixels, resolved.maxImageBytes, resolved.numericScale], [24_000_000, 8 * 1024 * 1024, 1]);
  });
});
