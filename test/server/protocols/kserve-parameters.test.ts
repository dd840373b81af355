/**
 * KServe V2 "parameters" in a model answer (top-level and per output) can carry anything a model
 * server puts there, raw scores included: the codec keeps only the keys listed in keepParameters, in
 * the proxy and in the middleware alike.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import express from 'express';
import request from 'supertest';
import { ServingOptionError } from '../../../src/server/errors.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { kserveV2Codec } from '../../../src/server/protocols/index.js';
import { startDefenseProxy } from '../../../src/server/proxy.js';
import { assertNoOriginalNumbers, kserveRequest, ORIGINAL_ROWS } from '../helpers/fixtures.js';

const RAW = ORIGINAL_ROWS.flat();

/** An answer whose parameters and extra tensor fields (top-level, in the defended output, in a kept output) repeat the raw scores. */
function leakyAnswer() {
  return {
    model_name: 'mnist',
    id: 'r1',
    parameters: { raw_probs: RAW, content_type: 'np', nested: { again: RAW } },
    outputs: [
      // Fields the protocol does not define (a wrapper's additions) must not survive either.
      {
        name: 'probabilities',
        shape: [2, 3],
        datatype: 'FP32',
        parameters: { raw_probs: RAW, binary_data: false },
        data: RAW,
        raw_logits: RAW,
        extra: { p: RAW },
      },
      { name: 'label', shape: [2], datatype: 'INT64', parameters: { scores: RAW }, data: [0, 1], scores: RAW },
    ],
  };
}

const halves = { rows: 2, cols: 3, data: new Float32Array(6).fill(0.5) };

describe('kserve-v2 codec: parameters of the answer', () => {
  it('drops every parameter by default: top-level, in the defended output and in a kept output', () => {
    const codec = kserveV2Codec({ outputName: 'probabilities', keepOutputs: ['label'] });
    // biome-ignore lint/suspicious/noExplicitAny: the test walks an arbitrary answer body
    const written = codec.readAnswer(leakyAnswer()).write(halves) as Record<string, any>;
    assert.deepEqual(written, {
      model_name: 'mnist',
      id: 'r1',
      outputs: [
        { name: 'probabilities', shape: [2, 3], datatype: 'FP32', data: [0.5, 0.5, 0.5, 0.5, 0.5, 0.5] },
        { name: 'label', shape: [2], datatype: 'INT64', data: [0, 1] },
      ],
    });
    assertNoOriginalNumbers(JSON.stringify(written));
  });

  it('keeps the keys listed in keepParameters, and only those', () => {
    const codec = kserveV2Codec({ outputName: 'probabilities', keepOutputs: ['label'], keepParameters: ['content_type', 'binary_data'] });
    const original = leakyAnswer();
    // biome-ignore lint/suspicious/noExplicitAny: the test walks an arbitrary answer body
    const written = codec.readAnswer(original).write(halves) as Record<string, any>;
    assert.deepEqual(written.parameters, { content_type: 'np' });
    assert.deepEqual(written.outputs[0].parameters, { binary_data: false });
    assert.equal('parameters' in written.outputs[1], false, 'no kept key left: the field is left out');
    assertNoOriginalNumbers(JSON.stringify(written));
    assert.deepEqual(original, leakyAnswer(), 'the original body is not mutated');
  });

  it('checks keepParameters when built', () => {
    for (const bad of ['content_type', [1], [''], {}])
      assert.throws(
        () => kserveV2Codec({ keepParameters: bad as never }),
        (e: Error) => e instanceof ServingOptionError && /keepParameters must be a list/.test(e.message),
      );
  });
});

describe('parameters of the answer, served', () => {
  it('the proxy drops them (top-level and per output)', async () => {
    const text = JSON.stringify({ ...leakyAnswer(), outputs: [leakyAnswer().outputs[0]] });
    const model = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      });
    });
    await new Promise<void>((resolve) => model.listen(0, '127.0.0.1', resolve));
    const proxy = await startDefenseProxy({ upstream: `http://127.0.0.1:${(model.address() as AddressInfo).port}`, defense: 'rounding:decimals=2' });
    try {
      const res = await request(proxy.url).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
      assert.equal(res.body.parameters, undefined);
      assert.equal(res.body.outputs[0].parameters, undefined);
      assert.deepEqual(res.body.outputs[0].data, [0.71, 0.2, 0.09, 0.14, 0.64, 0.22]);
      assertNoOriginalNumbers(res.text);
    } finally {
      await proxy.close();
      model.closeAllConnections();
      await new Promise<void>((resolve) => model.close(() => resolve()));
    }
  });

  it('the middleware drops them, and keeps what keepParameters lists', async () => {
    const app = express();
    app.use(express.json());
    app.post(
      '/v2/models/mnist/infer',
      poisonPredictions({ defense: 'rounding:decimals=2', protocol: { name: 'kserve-v2', outputName: 'probabilities', keepParameters: ['content_type'] } }),
      (_req, res) => void res.json(leakyAnswer()),
    );
    const res = await request(app).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
    assert.deepEqual(res.body.parameters, { content_type: 'np' });
    assert.equal(res.body.outputs[0].parameters, undefined);
    assertNoOriginalNumbers(res.text);
  });
});
