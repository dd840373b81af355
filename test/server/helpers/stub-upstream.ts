/**
 * A small model server on 127.0.0.1 speaking one protocol, for proxy tests and benchmarks. The
 * `x-stub-mode` request header picks a misbehaviour; every request is recorded.
 */
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import { ORIGINAL_ROWS } from './fixtures.js';

/**
 * How long the 'slow' mode waits before answering. Proxy tests use a third of it as their timeout:
 * far above what a normal answer takes on a loaded CI machine, far below the slow answer.
 */
export const SLOW_ANSWER_MS = 3000;

export type StubProtocol = 'kserve-v2' | 'tf-serving' | 'json-path';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface StubUpstream {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

function answerFor(protocol: StubProtocol, rows: number[][]): unknown {
  if (protocol === 'kserve-v2')
    return { model_name: 'mnist', outputs: [{ name: 'probabilities', shape: [rows.length, rows[0].length], datatype: 'FP32', data: rows.flat() }] };
  if (protocol === 'tf-serving') return { predictions: rows };
  return { result: { items: rows.map((scores, i) => ({ id: i, scores })) } };
}

const INFER: Record<StubProtocol, RegExp> = {
  'kserve-v2': /^\/v2\/models\/[^/]+(\/versions\/[^/]+)?\/infer$/,
  'tf-serving': /^\/v1\/models\/[^/:]+(\/versions\/[^/:]+)?:(predict|classify)$/,
  'json-path': /^\/predict$/,
};

export async function startStubUpstream(protocol: StubProtocol, rows: number[][] = ORIGINAL_ROWS, options: { record?: boolean } = {}): Promise<StubUpstream> {
  const requests: RecordedRequest[] = [];
  const record = options.record ?? true;
  const answerText = JSON.stringify(answerFor(protocol, rows));
  const servedOnSocket = new WeakMap<object, number>();
  const server = http.createServer((req, res) => {
    servedOnSocket.set(req.socket, (servedOnSocket.get(req.socket) ?? 0) + 1);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      if (record) requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const mode = String(req.headers['x-stub-mode'] ?? '');
      const path = (req.url ?? '').split('?')[0];
      const json = (status: number, text: string, headers: http.OutgoingHttpHeaders = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
        res.end(text);
      };
      if (req.method === 'GET' && /health|ready|^\/v2\/?$|^\/v1\/models\/[^:]+$/.test(path))
        return json(200, JSON.stringify({ ready: true, path }), { 'x-upstream': 'stub' });
      if (req.method === 'GET' && /^\/v2\/models\/[^/]+$|metadata$/.test(path))
        return json(200, JSON.stringify({ name: 'mnist', platform: 'stub', inputs: [{ name: 'image', datatype: 'FP32', shape: [-1, 784] }] }), {
          'x-upstream': 'stub',
        });
      if (!INFER[protocol].test(path)) return json(404, JSON.stringify({ error: `no route ${path}` }));
      switch (mode) {
        case 'reset':
          req.socket.destroy();
          return;
        case 'drop-reused':
          // As a server that closed an idle keep-alive connection: a second request on it is cut off.
          if (servedOnSocket.get(req.socket)! > 1) {
            req.socket.destroy();
            return;
          }
          return json(200, answerText);
        case 'reset-mid-body':
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': 1000 });
          res.write(answerText.slice(0, 10));
          setTimeout(() => req.socket.destroy(), 10);
          return;
        case 'slow':
          setTimeout(() => json(200, answerText), SLOW_ANSWER_MS);
          return;
        case 'html':
          res.writeHead(200, { 'content-type': 'text/html' });
          res.end(`<html>${rows.flat().join(' ')}</html>`);
          return;
        case 'bad-shape':
          return json(
            200,
            JSON.stringify({
              model_name: 'mnist',
              outputs: [{ name: 'probabilities', shape: [7], datatype: 'FP32', data: rows.flat() }],
              predictions: [rows.flat()],
              result: { items: 'none' },
            }),
          );
        case 'error-json':
          return json(503, JSON.stringify({ error: 'model is loading' }));
        case 'error-html':
          res.writeHead(502, { 'content-type': 'text/html' });
          res.end('<html>bad gateway</html>');
          return;
        case 'error-with-probs':
          return json(500, answerText);
        default: {
          const encoding = String(req.headers['x-stub-encoding'] ?? '');
          if (encoding === 'gzip' || encoding === 'br') {
            const packed = encoding === 'gzip' ? zlib.gzipSync(answerText) : zlib.brotliCompressSync(answerText);
            res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': encoding, 'content-length': packed.length, etag: '"abc"' });
            res.end(packed);
            return;
          }
          return json(200, answerText, { 'x-model-version': '7', etag: '"abc"' });
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A port on 127.0.0.1 where nothing listens. */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
