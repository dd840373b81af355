/**
 * The demo inference server: a classifier served over the Open Inference Protocol (KServe V2),
 * with the defense middleware mounted on the inference route and Prometheus metrics at /metrics.
 * Built from a given model, so tests run it with a tiny one.
 *
 *   GET  /v2/health/live, /v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready
 *   POST /v2/models/{name}/infer   {"inputs": [{"name": "image", "shape": [B, 784], "datatype": "UINT8"|"FP32", "data": [...]}]}
 *   GET  /metrics
 */
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { asyncSurrogate } from '../models/tfjs/plan/async-surrogate.js';
import { predictProbs } from '../models/tfjs/plan/predict.js';
import { Surrogate } from '../models/tfjs/plan/plan-surrogate.js';
import { classCount, inputSize } from '../models/tfjs/architectures.js';
import type { LayersModel } from '../models/tfjs/tf.js';
import { ServingError } from '../server/errors.js';
import { mapContextInputs } from '../server/batching/batched-context.js';
import { createBatcher, type Batcher } from '../server/batching/batcher.js';
import { resolveBatching, type BatchingOptions } from '../server/batching/options.js';
import { createHttpLogger, redactingHeaders } from '../server/logger.js';
import { poisonPredictions, type PoisonPredictionsMiddleware } from '../server/middleware.js';
import type { DefenseOption } from '../server/options.js';
import type { ContextProvider } from '../server/perturber.js';
import { kserveV2Codec } from '../server/protocols/index.js';
import { pixelsInUnitRange } from './pixels.js';
import { bearerCheck, DEFAULT_ADMIN_PATH } from '../server/clients/admin.js';
import type { ClientsOptions } from '../server/clients/options.js';
import type { InputRows } from '../server/protocols/index.js';

export const DEMO_DEFENSE = 'mad-argmax:eps=0.8';
export const DEMO_INPUT_NAME = 'image';
export const DEMO_OUTPUT_NAME = 'probabilities';
const DEMO_PROCESS_PREFIX = 'msd_demo_';

export interface DemoAppOptions {
  model: LayersModel;
  /** Served model name, default "mnist". */
  modelName?: string;
  /** Default MAD-argmax (ε = 0.8, L1), which needs `context`. */
  defense?: DefenseOption;
  /** The surrogate's context for MAD; receives the request's inputs already scaled to [0, 1]. */
  context?: ContextProvider;
  logger?: Logger;
  registry?: Registry;
  /** Node process metrics (CPU, memory, event loop) on the registry; default true. */
  processMetrics?: boolean;
  /** Escalation tiers for `clients` (tier name → defense). */
  tiers?: Readonly<Record<string, DefenseOption>>;
  /** Per-client detection (see ServingOptions.clients); its hardness provider gets the inputs scaled to [0, 1]. */
  clients?: ClientsOptions;
  /** Largest JSON request body, default "20mb" (a batch of 256 UINT8 images is about 0.6 MB). */
  bodyLimit?: string;
  /**
   * Batch the model's own forward passes too (asynchronous, shared, split into chunks, bounded), so a
   * large request cannot hold small ones behind it; default: one synchronous pass per request.
   */
  batching?: BatchingOptions;
  /**
   * Bearer token /metrics requires (they show how each answer was changed); without one they are
   * open, as suits a demo on 127.0.0.1.
   */
  metricsToken?: string;
}

export interface DemoApp {
  app: Express;
  guard: PoisonPredictionsMiddleware;
  registry: Registry;
  /** Stops the model's batcher (when batching), refusing what waits; the surrogate context is the caller's to close. */
  close(): Promise<void>;
}

export function buildDemoApp(options: DemoAppOptions): DemoApp {
  const { model } = options;
  const name = options.modelName ?? 'mnist';
  const features = inputSize(model);
  const classes = classCount(model);
  const registry = options.registry ?? new Registry();
  // Process metrics once per registry (a registry passed to several demo apps keeps one set).
  if (options.processMetrics !== false && !registry.getSingleMetric(`${DEMO_PROCESS_PREFIX}process_cpu_seconds_total`)) {
    collectDefaultMetrics({ register: registry, prefix: DEMO_PROCESS_PREFIX });
  }
  const codec = kserveV2Codec({ inputName: DEMO_INPUT_NAME, outputName: DEMO_OUTPUT_NAME });
  const scaledContext: ContextProvider | undefined = options.context && mapContextInputs(options.context, pixelsInUnitRange);
  const hardness = options.clients?.hardness;
  const clients =
    options.clients && (hardness ? { ...options.clients, hardness: (inputs: InputRows) => hardness(pixelsInUnitRange(inputs)) } : options.clients);
  const guard = poisonPredictions({
    defense: options.defense ?? DEMO_DEFENSE,
    protocol: codec,
    context: scaledContext,
    registry,
    logger: options.clients ? options.logger : undefined,
    tiers: options.tiers,
    clients,
  });

  const app = express();
  app.disable('x-powered-by');
  // The request line never carries a client's API key, whatever header holds it (as in the proxy).
  const identity = options.clients?.identity;
  const identityHeader = typeof identity === 'string' && identity.startsWith('header:') ? [identity.slice(7)] : [];
  if (options.logger) app.use(createHttpLogger(redactingHeaders(options.logger, identityHeader)));
  const metadata = {
    name,
    versions: ['1'],
    platform: 'tensorflowjs',
    inputs: [{ name: DEMO_INPUT_NAME, datatype: 'FP32', shape: [-1, features] }],
    outputs: [{ name: DEMO_OUTPUT_NAME, datatype: 'FP32', shape: [-1, classes] }],
  };
  app.get('/v2/health/live', (_req, res) => void res.json({ live: true }));
  app.get('/v2/health/ready', (_req, res) => void res.json({ ready: true }));
  app.get('/v2', (_req, res) => void res.json({ name: 'model-stealing-defense demo', version: '1', extensions: [] }));
  app.get(`/v2/models/${name}`, (_req, res) => void res.json(metadata));
  app.get(`/v2/models/${name}/ready`, (_req, res) => void res.json({ name, ready: true }));
  const metricsAuthorized = options.metricsToken !== undefined ? bearerCheck(options.metricsToken) : undefined;
  app.get(
    '/metrics',
    (req, res, next) => {
      if (!metricsAuthorized || metricsAuthorized(req)) return next();
      res.status(401).set('www-authenticate', 'Bearer').json({ error: 'the metrics need Authorization: Bearer <metrics token>' });
    },
    guard.metricsHandler,
  );
  // With clients.admin (msd serve --admin-token-env): the suspicious clients, behind their bearer token.
  if (guard.adminHandler) app.all(options.clients?.admin?.path ?? DEFAULT_ADMIN_PATH, guard.adminHandler);

  const batched = options.batching && batchedForward(model, options.batching);
  app.post(`/v2/models/${name}/infer`, express.json({ limit: options.bodyLimit ?? '20mb' }), guard, (req, res, next) => {
    // express.json leaves no body for another content type: the client's 400, not the guard's 500.
    if (req.body === undefined) throw new ServingError('send the request as JSON (content-type: application/json)', 400, 'bad_request');
    // The guard's reading of the inputs (once per request, shared with the defense and the detectors):
    // malformed, too deeply nested or non-finite (1e400) inputs are the client's 400, not the model's 500.
    guard
      .inputsOf(req)
      .then((read) => {
        const inputs = pixelsInUnitRange(read);
        if (inputs.cols !== features)
          throw new ServingError(`input "${DEMO_INPUT_NAME}" has ${inputs.cols} values per row; the model takes ${features}`, 400, 'bad_request');
        const answer = (probs: Float32Array): void => {
          const id = typeof req.body?.id === 'string' ? { id: req.body.id } : {};
          res.json({
            model_name: name,
            model_version: '1',
            ...id,
            outputs: [{ name: DEMO_OUTPUT_NAME, shape: [inputs.rows, classes], datatype: 'FP32', data: Array.from(probs) }],
          });
        };
        if (!batched) return answer(predictProbs(model, inputs.data, inputs.rows));
        if (inputs.rows > batched.maxRowsPerRequest)
          throw new ServingError(`${inputs.rows} input rows; at most ${batched.maxRowsPerRequest} per request are accepted, split the batch`, 413, 'too_large');
        return batched.batcher.submit(inputs.data, inputs.rows).then(answer);
      })
      .catch(next);
  });

  // Errors in the protocol's style: {"error": "..."}; malformed JSON from express.json is a 400.
  app.use((error: Error & { status?: number; type?: string }, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(error);
    const status = error instanceof ServingError ? error.status : error.status && error.status < 500 ? error.status : 500;
    if (error instanceof ServingError && error.headers) res.set(error.headers);
    res.status(status).json({ error: status === 500 ? 'internal error' : error.message });
  });
  app.use((req, res) => void res.status(404).json({ error: `no route ${req.method} ${req.path}` }));
  return { app, guard, registry, close: async () => batched?.batcher.close() };
}

/** The model's forward passes through a batcher (see server/batching): asynchronous, shared and chunked. */
function batchedForward(model: LayersModel, options: BatchingOptions): { batcher: Batcher<Float32Array>; maxRowsPerRequest: number } {
  const resolved = resolveBatching(options);
  const forward = asyncSurrogate(new Surrogate(model));
  const batcher = createBatcher(async (inputs, rows) => (await forward.probsAsync(inputs, rows)).data, {
    ...resolved,
    width: inputSize(model),
    what: 'the model',
  });
  return { batcher, maxRowsPerRequest: resolved.maxRowsPerRequest };
}
