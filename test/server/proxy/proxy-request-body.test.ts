/**
 * The proxy and the model see the same request: on an inference route the proxy forwards the JSON it
 * parsed (the value its surrogate and detectors read), serialised again with its own framing, never
 * the client's bytes. A duplicate key, which JSON.parse resolves to the last one and a model server
 * may resolve to the first, can then not show the model another input than the proxy saw.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import type { DefenseContext } from '../../../src/defenses/index.js';
import { startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';
import { contextEchoDefense } from '../helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

const PATH = '/v2/models/mnist/infer';
const A = [0, 0, 0, 0, 0, 0, 0, 0];
const B = [9, 9, 9, 9, 9, 9, 9, 9];
const tensor = (data: number[]) => `{"name":"image","shape":[2,4],"datatype":"FP32","data":${JSON.stringify(data)}}`;

/** POSTs `text` as it is (no client library re-serialising it); resolves status and body. */
function post(url: string, text: string | Buffer, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${PATH}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end(text);
  });
}

describe('proxy: the model gets the request the proxy parsed', () => {
  let upstream: StubUpstream;
  let proxy: RunningProxy;
  /** The input rows the surrogate was given, per request. */
  const surrogateSaw: number[][] = [];
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
    const context = (_needs: readonly string[], inputs: { rows: number; cols: number; data: Float32Array }): DefenseContext => {
      surrogateSaw.push(Array.from(inputs.data));
      return { surrogateProbs: { rows: inputs.rows, cols: 3, data: new Float32Array(inputs.rows * 3).fill(1 / 3) } };
    };
    proxy = await startDefenseProxy({ upstream: upstream.url, defense: contextEchoDefense(), context, maxBodyBytes: 64 * 1024 * 1024 });
  });
  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  const lastForwarded = () => upstream.requests.at(-1)!;

  it('a duplicate top-level key: the model sees the input the surrogate saw, and no duplicate', async () => {
    const text = `{"inputs":[${tensor(A)}],"inputs":[${tensor(B)}]}`;
    const res = await post(proxy.url, text);
    assert.equal(res.status, 200, res.body);
    const seen = lastForwarded();
    assert.equal(seen.body, JSON.stringify(JSON.parse(text)), 'the model gets exactly what the proxy parsed');
    assert.deepEqual(JSON.parse(seen.body).inputs[0].data, surrogateSaw.at(-1));
    assert.deepEqual(surrogateSaw.at(-1), B);
    assert.equal(seen.body.match(/"inputs"/g)!.length, 1);
  });

  it('a duplicate nested key ("data" twice in one tensor)', async () => {
    const text = `{"inputs":[{"name":"image","shape":[2,4],"datatype":"FP32","data":${JSON.stringify(A)},"data":${JSON.stringify(B)}}]}`;
    const res = await post(proxy.url, text);
    assert.equal(res.status, 200, res.body);
    const seen = lastForwarded();
    assert.equal(seen.body, JSON.stringify(JSON.parse(text)));
    assert.equal(seen.body.match(/"data"/g)!.length, 1);
    assert.deepEqual(JSON.parse(seen.body).inputs[0].data, surrogateSaw.at(-1));
  });

  it('frames the forwarded body itself: its own Content-Length and type, no Content-Encoding once decoded', async () => {
    const text = `{"inputs":[${tensor(A)}], "id": "  spaced  " }`;
    const res = await post(proxy.url, zlib.gzipSync(text), { 'content-encoding': 'gzip', 'content-type': 'text/plain' });
    assert.equal(res.status, 200, res.body);
    const seen = lastForwarded();
    assert.equal(seen.body, JSON.stringify(JSON.parse(text)));
    assert.equal(seen.headers['content-encoding'], undefined);
    assert.equal(seen.headers['content-type'], 'application/json');
    assert.equal(seen.headers['content-length'], String(Buffer.byteLength(seen.body)));
  });

  it('forwards a large numeric tensor unchanged in value', async () => {
    // The stub model answers two rows.
    const rows = 2;
    const features = 3 * 224 * 224;
    const data = Array.from({ length: rows * features }, (_, i) => Math.fround(Math.sin(i) * 1e-3));
    const text = JSON.stringify({ inputs: [{ name: 'image', shape: [rows, features], datatype: 'FP32', data }] });
    const res = await post(proxy.url, text);
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(JSON.parse(lastForwarded().body).inputs[0].data, data);
  });

  it('refuses (400) a number beyond a double’s range, or nesting too deep, without forwarding it', async () => {
    const before = upstream.requests.length;
    // Where the codec does not look (it refuses one in the tensor itself): JSON could only forward it as null.
    const huge = await post(proxy.url, `{"inputs":[${tensor(A)}],"parameters":{"scale":-1e400}}`);
    assert.equal(huge.status, 400, huge.body);
    assert.match(huge.body, /out of range/);
    const deep = await post(proxy.url, `{"inputs":[${tensor(A)}],"x":${'['.repeat(200_000)}${']'.repeat(200_000)}}`);
    assert.equal(deep.status, 400, deep.body);
    assert.equal(upstream.requests.length, before);
  });
});
