/**
 * An image-classification server on nsfwjs's MobileNetV2 (five classes), speaking TF Serving's REST
 * API, with the stealing defense mounted in one line.
 *
 *   POST /v1/models/nsfw:predict   {"instances": [{"b64": "<base64 JPEG/PNG/WebP>"}, ...]}
 *                                  → {"predictions": [[Drawing, Hentai, Neutral, Porn, Sexy], ...]}
 *   GET  /metrics                  Prometheus metrics (requests, perturbation, batching, event-loop delay),
 *                                  on `ops`, an app of its own for a port clients cannot reach: the
 *                                  metrics show how each answer was changed
 *
 * The middleware's `inputs.image` declares nsfwjs's preprocessing (224×224 RGB, pixels / 255); it
 * decodes each image once (sharp), and the route feeds those very rows (`defend.inputsOf(req)`) to the
 * victim, so MAD's surrogate (the same MobileNetV2 topology with every weight re-drawn from a seed)
 * sees the tensor the victim saw. A route that decodes by itself works as well, at a second decode.
 * Inside this repository the package is imported from its sources; in your project, import from
 * 'model-stealing-defense'.
 */
import { fileURLToPath } from 'node:url';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { load as loadNsfw } from 'nsfwjs';
import { collectDefaultMetrics, Registry } from 'prom-client';
import {
  batchedSurrogateContext,
  createBatcher,
  initBackend,
  loadSurrogate,
  onnxRuntimeStatus,
  poisonPredictions,
  RequestFormatError,
  ServingError,
  tf,
  type SurrogateModel,
} from '../../src/index.js';

export const MODEL_DIR = fileURLToPath(new URL('../../node_modules/nsfwjs/dist/models/mobilenet_v2', import.meta.url));
/** nsfwjs's classes, in the order of the model's outputs. */
export const CLASSES = ['Drawing', 'Hentai', 'Neutral', 'Porn', 'Sexy'];
const SIZE = 224;
const PIXELS = SIZE * SIZE * 3;
/** Images per request: a request's images are decoded concurrently and each costs a forward pass or two. */
const MAX_INSTANCES = 8;
/** Encoded bytes per image, for the route and the middleware alike. */
const MAX_IMAGE_BYTES = 4 << 20;

export interface NsfwAppOptions {
  /** A defense spec (default 'mad-argmax:eps=0.8'); 'none' answers the model's own probabilities. */
  defense?: string;
  /** Seed of the surrogate's re-initialised weights (default 7). */
  seed?: number;
  /** Another surrogate instead of the re-initialised MobileNetV2 (the app disposes it on close). */
  surrogate?: SurrogateModel;
  /**
   * Run the re-initialised surrogate in a worker thread (loadSurrogate's `thread`), so its forward
   * passes never stall the event loop (default true; see docs/measurements/benchmarks.md, example-nsfw).
   */
  surrogateThread?: boolean;
  /** Run the victim (nsfwjs's MobileNetV2, loaded from the same files) in a worker thread too: its own forward pass is the other stall (default true). */
  victimThread?: boolean;
  /**
   * Where the re-initialised surrogate runs: 'onnx' (converted at start, run by onnxruntime-node,
   * 11–12× faster per image than TF.js here), 'tfjs', or 'auto' (default: onnx when the optional
   * onnxruntime-node is installed, else tfjs).
   */
  surrogateEngine?: 'auto' | 'onnx' | 'tfjs';
}

export interface NsfwApp {
  app: Express;
  /** GET /metrics, for a port that clients cannot reach (the metrics show how each answer was changed). */
  ops: Express;
  /** What runs the surrogate, for the start-up line: 'onnx', 'tfjs', or undefined without one. */
  surrogateEngine?: 'onnx' | 'tfjs';
  /** Rejects what waits (503), lets the forward pass in flight finish and frees the models. Call after server.close(). */
  close(): Promise<void>;
}

export async function buildNsfwApp(options: NsfwAppOptions = {}): Promise<NsfwApp> {
  const defense = options.defense ?? 'mad-argmax:eps=0.8';
  await initBackend({ log: () => {} });

  // The victim: nsfwjs's own MobileNetV2, bundled in the package (nothing is downloaded); in this
  // thread through nsfwjs, or in a worker thread through the same model wrapper as the surrogate.
  const victimThread = options.victimThread ?? true;
  const nsfw = victimThread ? undefined : await loadNsfw('MobileNetV2');
  const victimModel = victimThread ? await loadSurrogate({ dir: MODEL_DIR, thread: true }) : undefined;
  // `pixels` are already scaled to 0..1 (the middleware's preprocessing, declared below).
  const classify = async (pixels: Float32Array, rows: number): Promise<Float32Array> => {
    if (victimModel) return (await victimModel.probsAsync(pixels, rows)).data;
    const probs = tf.tidy(() => nsfw!.model.predict(tf.tensor4d(pixels, [rows, SIZE, SIZE, 3])) as tf.Tensor);
    try {
      return (await probs.data()) as Float32Array;
    } finally {
      probs.dispose();
    }
  };
  // One image per forward pass, one pass at a time, the event loop free between passes; 503 when 64 images wait.
  const victim = createBatcher(classify, { width: PIXELS, windowMs: 0, maxBatchRows: 1, maxQueueRows: 64, what: 'the classifier' });

  // The defense: MAD-argmax against a surrogate of the same topology, freshly initialised, batched.
  let engine: 'onnx' | 'tfjs' | undefined;
  if (defense !== 'none' && !options.surrogate) {
    const asked = options.surrogateEngine ?? 'auto';
    engine = asked === 'auto' ? ((await onnxRuntimeStatus()).available ? 'onnx' : 'tfjs') : asked;
  }
  // On onnxruntime, one thread: the victim's pass needs the other core.
  const surrogate =
    defense === 'none'
      ? undefined
      : (options.surrogate ??
        (await loadSurrogate({
          dir: MODEL_DIR,
          reinit: options.seed ?? 7,
          thread: options.surrogateThread ?? true,
          engine,
          ...(engine === 'onnx' ? { threads: 1 } : {}),
        })));
  const context = surrogate && batchedSurrogateContext({ surrogate }, { maxQueueRows: 64, maxRowsPerRequest: MAX_INSTANCES });
  const registry = new Registry();
  // Process metrics, among them the event-loop delay (reset at each scrape, 1 ms resolution).
  collectDefaultMetrics({ register: registry, prefix: 'msd_', eventLoopMonitoringPrecision: 1 });
  const defend = poisonPredictions({
    defense,
    protocol: 'tf-serving',
    context,
    registry,
    inputs: { image: { width: SIZE, height: SIZE, scale: 1 / 255 }, maxImageBytes: MAX_IMAGE_BYTES },
  });

  const app = express();
  app.post(/^\/v1\/models\/nsfw:predict$/, express.json({ limit: '8mb' }), defend, async (req: Request, res: Response, next: NextFunction) => {
    try {
      const instances: unknown = req.body?.instances;
      if (!Array.isArray(instances) || instances.length === 0 || instances.length > MAX_INSTANCES) {
        throw new RequestFormatError(`write {"instances": [{"b64": "<base64 image>"}]} with 1 to ${MAX_INSTANCES} images`);
      }
      // The images as the middleware decoded them for the surrogate (sharp: alpha dropped, stretched
      // to 224×224, sRGB, pixels / 255, as nsfwjs's own infer does): decoded once for both models.
      const { data, rows } = await defend.inputsOf(req);
      const probs = await victim.submit(data, rows);
      const predictions = Array.from({ length: rows }, (_, i) => Array.from(probs.subarray(i * CLASSES.length, (i + 1) * CLASSES.length)));
      res.json({ predictions });
    } catch (error) {
      next(error);
    }
  });
  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const known = error instanceof ServingError ? error : undefined;
    if (known?.headers) res.set(known.headers);
    // express.json's errors carry their status (400 malformed, 413 too large).
    const status = known?.status ?? (error as { status?: number }).status ?? 500;
    res.status(status).json({ error: status < 500 || known ? String((error as Error).message) : 'internal error' });
  });

  const ops = express();
  ops.get('/metrics', defend.metricsHandler);

  return {
    app,
    ops,
    surrogateEngine: engine,
    async close() {
      await Promise.all([victim.close(), context?.close()]);
      surrogate?.dispose();
      victimModel?.dispose();
      nsfw?.dispose();
    },
  };
}
