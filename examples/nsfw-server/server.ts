/**
 * Starts the nsfwjs example server: `npm run example:nsfw`, or with settings
 *   PORT=8080 METRICS_PORT=9464 DEFENSE='mad-argmax:eps=0.8' SEED=7 SURROGATE_THREAD=1 VICTIM_THREAD=0 SURROGATE_ENGINE=auto npm run example:nsfw
 * (METRICS_PORT, on 127.0.0.1 or METRICS_HOST: /metrics, kept from the clients' port.)
 * (SURROGATE_THREAD / VICTIM_THREAD: 1, the default, runs that model in a worker thread; 0 in the main thread.
 * SURROGATE_ENGINE: onnx, tfjs, or auto, the default: onnx when onnxruntime-node is installed.)
 * SIGTERM/SIGINT: stops accepting, finishes the requests in flight, frees the models, exits.
 */
import type { AddressInfo } from 'node:net';
import { buildNsfwApp } from './app.js';

/** An on/off environment variable: 1/true/yes or 0/false/no; unset leaves the app's default. */
function envSwitch(name: string): boolean | undefined {
  const value = process.env[name]?.trim().toLowerCase();
  if (value === undefined || value === '') return undefined;
  if (['1', 'true', 'yes'].includes(value)) return true;
  if (['0', 'false', 'no'].includes(value)) return false;
  throw new Error(`${name} must be 1 or 0, got "${process.env[name]}"`);
}

const engine = process.env.SURROGATE_ENGINE?.trim().toLowerCase() || undefined;
if (engine !== undefined && !['auto', 'onnx', 'tfjs'].includes(engine))
  throw new Error(`SURROGATE_ENGINE must be auto, onnx or tfjs, got "${process.env.SURROGATE_ENGINE}"`);
const { app, ops, close, surrogateEngine } = await buildNsfwApp({
  defense: process.env.DEFENSE,
  seed: process.env.SEED === undefined ? undefined : Number(process.env.SEED),
  surrogateThread: envSwitch('SURROGATE_THREAD'),
  victimThread: envSwitch('VICTIM_THREAD'),
  surrogateEngine: engine as 'auto' | 'onnx' | 'tfjs' | undefined,
});
const server = app.listen(Number(process.env.PORT ?? 8080), process.env.HOST ?? '127.0.0.1', () => {
  const { address, port } = server.address() as AddressInfo;
  const surrogate = surrogateEngine ? `; surrogate on ${surrogateEngine === 'onnx' ? 'onnxruntime-node' : 'TF.js'}` : '';
  console.log(`nsfw example listening on http://${address}:${port} (POST /v1/models/nsfw:predict${surrogate})`);
});
const metricsPort = Number(process.env.METRICS_PORT ?? 9464);
const opsServer = ops.listen(metricsPort, process.env.METRICS_HOST ?? '127.0.0.1', () => {
  const { address, port } = opsServer.address() as AddressInfo;
  console.log(`nsfw example metrics on http://${address}:${port}/metrics`);
});
opsServer.on('error', (error: NodeJS.ErrnoException) => {
  console.error(`nsfw example: cannot serve the metrics on port ${metricsPort} (${error.code ?? error.message}); set METRICS_PORT to a free one`);
  process.exit(1);
});

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log(`${signal}: draining`);
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  opsServer.close();
  opsServer.closeIdleConnections();
  await closed;
  await close();
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
