/**
 * `npm run example:nsfw`'s process: it listens where PORT says, and SIGTERM lets a request in flight
 * finish with its answer before the process exits 0. Defense `none`, so only the victim loads.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { after, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { within } from '../helpers/wait.js';

const SERVER = fileURLToPath(new URL('../../examples/nsfw-server/server.ts', import.meta.url));

/**
 * A POST; `started` resolves once the server has read the request's head and begun on it: the request
 * says `Expect: 100-continue`, and Node's server answers "100 Continue" as it starts handling one
 * (the body is sent at once all the same).
 */
function post(url: string, body: string, agent: http.Agent): { started: Promise<void>; answer: Promise<{ status: number; text: string }> } {
  let started!: Promise<void>;
  const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', expect: '100-continue' } }, (res) => {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    started = new Promise<void>((resolveStarted, rejectStarted) => {
      req.once('continue', () => resolveStarted());
      req.once('error', rejectStarted);
    });
    started.catch(() => {}); // the answer rejects with the same error
    req.once('error', reject);
    req.end(body);
  });
  return { started, answer };
}

it('answers the request in flight on SIGTERM, then exits 0', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER], {
    env: { ...process.env, PORT: '0', METRICS_PORT: '0', DEFENSE: 'none' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const agent = new http.Agent({ keepAlive: true });
  after(() => {
    agent.destroy();
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  let out = '';
  const listening = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk;
      const found = /listening on (http:\/\/\S+)/.exec(out)?.[1];
      if (found) resolve(`${found}/v1/models/nsfw:predict`);
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  const url = await within(listening, { what: 'the example server to listen (its "listening on" line)', timeoutMs: 120_000, detail: () => out });
  const png = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 120, b: 40 } } })
    .png()
    .toBuffer();
  const one = JSON.stringify({ instances: [{ b64: png.toString('base64') }] });
  // The first request opens a kept-alive connection; the second (8 images, 8 forward passes) is in flight on it when SIGTERM comes.
  assert.equal((await within(post(url, one, agent).answer, { what: 'the first answer', timeoutMs: 60_000 })).status, 200);
  const inFlight = post(url, JSON.stringify({ instances: new Array(8).fill({ b64: png.toString('base64') }) }), agent);
  await within(inFlight.started, { what: 'the server to start on the 8-image request (its 100 Continue)', timeoutMs: 10_000 });
  child.kill('SIGTERM');
  const answer = await within(inFlight.answer, { what: 'the answer to the request in flight', timeoutMs: 60_000, detail: () => out });
  assert.equal(answer.status, 200, answer.text);
  assert.equal(JSON.parse(answer.text).predictions.length, 8);
  assert.equal(await within(exited, { what: 'the server to exit after SIGTERM', timeoutMs: 30_000, detail: () => out }), 0);
  assert.match(out, /SIGTERM: draining/);
});
