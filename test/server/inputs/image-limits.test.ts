/**
 * What one request's images may cost: the image count is checked against the row limit before any
 * image is read, each image's sides and pixels are read from its header and checked before it is
 * decoded, the request's images together have a pixel budget, and decodes run a bounded number at a
 * time. The decoder is instrumented through the reader's `decoder` hook: a refused request decodes nothing.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { after, before, describe, it } from 'node:test';
import express, { type Request } from 'express';
import request from 'supertest';
import type { DefenseContext } from '../../../src/defenses/index.js';
import { RequestFormatError, ServingOptionError } from '../../../src/server/errors.js';
import { createInputReader, decodePixels, readImageHeader, resolveInputOptions, type InputOptions } from '../../../src/server/inputs/index.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import type { ContextProvider } from '../../../src/server/perturber.js';
import type { InputRows, RequestInputs } from '../../../src/server/protocols/index.js';
import { startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';
import { contextEchoDefense, kserveAnswer } from '../helpers/fixtures.js';
import { b64, blackPng, corruptPngText, solidPng } from '../helpers/images.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

const IMAGE = { width: 4, height: 4 };
const images = (texts: string[]): RequestInputs => ({ kind: 'encoded-images', rows: texts.length, images: texts, where: 'the test' });
const kserveBody = (texts: string[]) => ({ inputs: [{ name: 'image', shape: [texts.length], datatype: 'BYTES', data: texts }] });

/** The real decoder, counted: header reads, pixel decodes, and the most pixel decodes running at once. */
function countingDecoder() {
  const counts = { headers: 0, pixels: 0, active: 0, maxActive: 0 };
  return {
    counts,
    decoder: {
      header: (...args: Parameters<typeof readImageHeader>) => {
        counts.headers += 1;
        return readImageHeader(...args);
      },
      pixels: async (...args: Parameters<typeof decodePixels>) => {
        counts.pixels += 1;
        counts.active += 1;
        counts.maxActive = Math.max(counts.maxActive, counts.active);
        try {
          // Hold the slot for a few turns of the event loop, so overlapping decodes do overlap.
          await new Promise((resolve) => setTimeout(resolve, 5));
          return await decodePixels(...args);
        } finally {
          counts.active -= 1;
        }
      },
    },
  };
}

function readerWith(options: InputOptions, maxRows?: number) {
  const { counts, decoder } = countingDecoder();
  const read = createInputReader(resolveInputOptions(options), { maxRows, decoder });
  return { counts, read: (texts: string[]) => Promise.resolve().then(() => read(images(texts))) };
}

const refusal = (status: number, message: RegExp) => (error: unknown) => {
  assert.ok(error instanceof RequestFormatError, String(error));
  assert.equal(error.status, status, error.message);
  assert.match(error.message, message);
  return true;
};

/** A provider with a row limit (as the batched surrogate context has) that records what it is given. */
function limitedProvider(maxRowsPerRequest: number) {
  const seen: InputRows[] = [];
  const provider = Object.assign(
    (_needs: readonly string[], inputs: InputRows): DefenseContext => {
      seen.push(inputs);
      return { surrogateProbs: { rows: inputs.rows, cols: 3, data: new Float32Array(inputs.rows * 3).fill(1 / 3) } };
    },
    { maxRowsPerRequest },
  ) as ContextProvider;
  return { provider, seen };
}

describe('image limits: the image count is checked before any image is read', () => {
  it('refuses more images than the row limit with 413, reading no header and decoding nothing', async () => {
    // Five images that would each be refused with 400 if their header were read.
    const { counts, read } = readerWith({ image: IMAGE }, 4);
    await assert.rejects(
      read(Array.from({ length: 5 }, corruptPngText)),
      refusal(413, /request: 5 images in the test; at most 4 per request are accepted, split the batch/),
    );
    assert.deepEqual([counts.headers, counts.pixels], [0, 0]);
  });

  it('without a row limit from the context, refuses more than 4096 images the same way', async () => {
    const { counts, read } = readerWith({ image: IMAGE });
    await assert.rejects(read(Array.from({ length: 4097 }, corruptPngText)), refusal(413, /request: 4097 images in the test; at most 4096 per request/));
    assert.deepEqual([counts.headers, counts.pixels], [0, 0]);
  });

  it('through the middleware: 413 for too many images, not the 400 that reading them would give', async () => {
    const { provider, seen } = limitedProvider(4);
    const app = express();
    app.use(express.json({ limit: '2mb' }));
    app.post(
      '/v2/models/m/infer',
      poisonPredictions({ defense: contextEchoDefense(), protocol: 'kserve-v2', context: provider, inputs: { image: IMAGE } } as never),
      (_req: Request, res) => void res.json(kserveAnswer()),
    );
    const res = await request(app)
      .post('/v2/models/m/infer')
      .send(kserveBody(Array.from({ length: 5 }, corruptPngText)))
      .expect(413);
    assert.match(res.body.error, /5 images in input "image"; at most 4 per request/);
    assert.equal(seen.length, 0);
  });

  describe('through the proxy', () => {
    let upstream: StubUpstream;
    let proxy: RunningProxy;
    const { provider, seen } = limitedProvider(4);
    before(async () => {
      upstream = await startStubUpstream('kserve-v2');
      proxy = await startDefenseProxy({
        upstream: upstream.url,
        defense: contextEchoDefense(),
        context: provider,
        protocol: 'kserve-v2',
        inputs: { image: IMAGE },
      });
    });
    after(async () => {
      await proxy.close(0);
      await upstream.close();
    });

    it('413 for too many images before anything is read or forwarded', async () => {
      const res = await request(proxy.url)
        .post('/v2/models/m/infer')
        .send(kserveBody(Array.from({ length: 5 }, corruptPngText)))
        .expect(413);
      assert.match(res.body.error, /request: 5 input rows; at most 4 per request are accepted/);
      assert.equal(upstream.requests.length, 0);
      assert.equal(seen.length, 0);
    });

    it('a 1 × 20,000,000 PNG (78 KB) is refused by its side before it is decoded or forwarded', async () => {
      const res = await request(proxy.url)
        .post('/v2/models/m/infer')
        .send(kserveBody([b64(blackPng(1, 20_000_000))]))
        .expect(400);
      assert.match(res.body.error, /the image in input "image" is 1×20000000 pixels: a side over the limit of 16384/);
      assert.equal(upstream.requests.length, 0);
    });
  });
});

describe('image limits: sides, the request’s pixel budget, concurrent decodes', () => {
  it('refuses a 1 × 20,000,000 PNG by its side from the header, decoding nothing', async () => {
    const png = blackPng(1, 20_000_000);
    assert.ok(png.length < 100_000, `${png.length} bytes`);
    const { counts, read } = readerWith({ image: IMAGE });
    await assert.rejects(read([b64(png)]), refusal(400, /the image in the test is 1×20000000 pixels: a side over the limit of 16384/));
    assert.deepEqual([counts.headers, counts.pixels], [1, 0]);
  });

  it('refuses a real 1 × 100,000 PNG, and one of 300 × 20 with maxImageSide 256; 256 × 20 decodes', async () => {
    const { counts, read } = readerWith({ image: IMAGE });
    await assert.rejects(read([b64(blackPng(1, 100_000))]), refusal(400, /is 1×100000 pixels: a side over the limit of 16384/));
    const small = readerWith({ image: IMAGE, maxImageSide: 256 });
    await assert.rejects(small.read([b64(blackPng(300, 20))]), refusal(400, /is 300×20 pixels: a side over the limit of 256/));
    assert.equal((await small.read([b64(blackPng(256, 20))])).rows, 1);
    assert.equal(counts.pixels + small.counts.pixels, 1, 'only the image within the limits was decoded');
  });

  it('refuses a request whose images together pass maxRequestPixels with 413, before decoding any', async () => {
    const tile = b64(await solidPng(20, 20, [10, 20, 30]));
    const { counts, read } = readerWith({ image: IMAGE, maxRequestPixels: 1000 });
    await assert.rejects(
      read([tile, tile, tile]),
      refusal(413, /image 2 of the test brings the request’s images to 1200 pixels \(width × height, from their headers\), over the limit of 1000 per request/),
    );
    assert.equal(counts.pixels, 0);
    assert.equal((await read([tile, tile])).rows, 2, 'two tiles (800 pixels) fit');
    assert.equal(counts.pixels, 2);
  });

  it('decodes at most maxConcurrentDecodes images at once, across the requests of one reader', async () => {
    const texts = await Promise.all(Array.from({ length: 12 }, (_, i) => solidPng(6, 6, [i * 20, 0, 0]).then(b64)));
    const { counts, read } = readerWith({ image: IMAGE, maxConcurrentDecodes: 2 });
    const [a, b] = await Promise.all([read(texts), read(texts.slice(0, 5))]);
    assert.deepEqual([a.rows, b.rows], [12, 5]);
    assert.equal(counts.pixels, 17);
    assert.equal(counts.maxActive, 2, 'two at once, never more');
    // The rows are still in order: row i is the image of red level 20·i.
    for (let r = 0; r < 12; r++) assert.equal(a.data[r * a.cols], r * 20, `row ${r}`);
  });

  it('stops decoding a request’s remaining images once one fails', async () => {
    const good = b64(await solidPng(6, 6, [1, 2, 3]));
    const png = await solidPng(6, 6, [1, 2, 3]);
    // A valid header over a cut body: the header check passes, the decode fails.
    const truncated = b64(png.subarray(0, png.length - 30));
    const { counts, read } = readerWith({ image: IMAGE, maxConcurrentDecodes: 1 });
    await assert.rejects(read([truncated, ...Array.from({ length: 10 }, () => good)]), refusal(400, /image 0 of the test is truncated or corrupt/));
    assert.equal(counts.pixels, 1, 'the images after the failed one were never decoded');
  });

  it('validates the new options and fills their defaults', () => {
    const resolved = resolveInputOptions(undefined);
    assert.deepEqual([resolved.maxRequestPixels, resolved.maxImageSide, resolved.maxConcurrentDecodes], [100_000_000, 16384, availableParallelism()]);
    const bad: [InputOptions, RegExp][] = [
      [{ maxRequestPixels: 0 }, /inputs: maxRequestPixels must be an integer from 1/],
      [{ maxImageSide: 1.5 }, /inputs: maxImageSide must be an integer from 1 to 65535/],
      [{ maxConcurrentDecodes: '4' as unknown as number }, /inputs: maxConcurrentDecodes must be an integer from 1 to 1024/],
    ];
    for (const [options, message] of bad)
      assert.throws(
        () => resolveInputOptions(options),
        (e: Error) => e instanceof ServingOptionError && message.test(e.message),
        JSON.stringify(options),
      );
  });
});
