/**
 * `serve`: the demo. An MNIST classifier served over the Open Inference Protocol (KServe V2), with
 * the defense middleware on the inference route (MAD-argmax by default) and /metrics. The first
 * start trains the model for a few epochs and caches it; later starts load it.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { dirname, isAbsolute, join, relative } from 'node:path';
import type { Command } from 'commander';
import { failCommand, integerFlag } from '../flags/flags.js';
import { addSurrogateFlags, surrogateSourceFromFlags, type SurrogateFlags, SURROGATE_HELP } from '../flags/surrogate-flags.js';
import { DefenseError, parseDefense, type ContextNeed } from '../../defenses/index.js';
import { defaultCacheRoot, loadDataset } from '../../eval/world/datasets.js';
import { initBackend, loadSurrogate, ModelError, Surrogate, type SurrogateModel } from '../../models/index.js';
import { buildDemoApp, DEMO_DEFENSE, DEMO_INPUT_NAME, type DemoApp } from '../../demo/app.js';
import { loadOrTrainDemoVictim } from '../../demo/victim.js';
import { ServingOptionError } from '../../server/errors.js';
import { closeOnSignals, drainingServer } from '../../server/lifecycle.js';
import { createLogger } from '../../server/logger.js';
import { batchedSurrogateContext } from '../../server/batching/batched-context.js';
import { checkSurrogateForNeeds } from '../../server/surrogate-context.js';
import { addBatchingFlags, batchingFromFlags, type BatchingFlags } from '../flags/batching-flags.js';
import { createProgress } from '../progress.js';
import { addClientFlags, tokenFrom, type ClientFlags } from '../flags/client-flags.js';
import { addDetectionFlags, type DetectionFlags } from '../flags/detection-flags.js';
import { serveDetection } from './serve-detection.js';

interface ServeFlags extends BatchingFlags, SurrogateFlags, ClientFlags, DetectionFlags {
  defense: string;
  port: string;
  host: string;
  epochs: string;
  modelDir?: string;
  secret?: string;
  logLevel: string;
  shutdownTimeoutMs: string;
  metricsTokenEnv?: string;
}

const MODEL_NAME = 'mnist';
const DEMO_BATCH_SIZE = 128;

const fail: (message: string) => never = (message) => failCommand('serve', message);

export function registerServeCommand(program: Command): void {
  const command = program
    .command('serve')
    .description('run the demo: an MNIST model server (KServe V2) with the defense middleware mounted and /metrics')
    .option('-d, --defense <spec>', 'defense spec (see: msd perturb --list)', DEMO_DEFENSE)
    .option('-p, --port <n>', 'port to listen on (0: any free port)', '8080')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--epochs <n>', 'training epochs on the first start', '3')
    .option('--model-dir <dir>', 'where the trained victim is cached (default .cache/models/demo-mnist-mlp)')
    .option('--surrogate <path>', `${SURROGATE_HELP} (default: a seeded, untrained MLP, as in the paper)`)
    .option('--secret <secret>', 'secret keying deterministic noise (default: env MSD_NOISE_SECRET)')
    .option('--log-level <level>', 'pino log level (one JSON line per request)', 'info')
    .option('--metrics-token-env <VAR>', 'serve /metrics only with Authorization: Bearer <token>, the token (16+ characters) read from env VAR')
    .option('--shutdown-timeout-ms <ms>', 'on SIGTERM, how long in-flight requests may take to finish before their connections are closed', '10000');
  addDetectionFlags(addClientFlags(addSurrogateFlags(command))).action((flags: ServeFlags) => serveDemo(flags));
  addBatchingFlags(command);
}

/** What the defense needs from a context; the command fails for a spec it cannot parse, or one the demo cannot serve. */
function defenseNeeds(spec: string, noiseSecret: string | undefined): readonly string[] {
  let needs: readonly string[];
  try {
    needs = parseDefense(spec, { noiseSecret }).needs;
  } catch (error) {
    if (error instanceof DefenseError) fail(error.message);
    throw error;
  }
  if (needs.includes('misinformation')) fail('the demo has no misinformation model; `npm run eval` evaluates that defense');
  return needs;
}

type Dataset = Awaited<ReturnType<typeof loadDataset>>;

/** The victim from its cache, or trained (with a progress bar) and cached on the first start. */
async function demoVictim(dataset: Dataset, modelDir: string, epochs: number): Promise<Awaited<ReturnType<typeof loadOrTrainDemoVictim>>> {
  const batchesPerEpoch = Math.ceil(dataset.train.rows / DEMO_BATCH_SIZE);
  const bar = createProgress({ label: `train the MNIST victim (${epochs} epochs, first start only), batches`, total: epochs * batchesPerEpoch });
  const victim = await loadOrTrainDemoVictim({
    dir: modelDir,
    train: dataset.train,
    test: dataset.test,
    features: dataset.train.x.length / dataset.train.rows,
    classes: dataset.classes,
    epochs,
    batchSize: DEMO_BATCH_SIZE,
    onProgress: (p) =>
      bar.update((p.epoch - 1) * p.batches + p.batch, `epoch ${p.epoch}/${p.epochs} loss ${p.loss.toFixed(3)} acc ${(p.accuracy * 100).toFixed(1)}%`),
  });
  if (!victim.fromCache) bar.finish(`saved to ${relative(process.cwd(), modelDir) || modelDir}`);
  process.stderr.write(
    `victim: MNIST MLP, test accuracy ${(victim.testAccuracy * 100).toFixed(2)}%${victim.fromCache ? ` (loaded from ${relative(process.cwd(), modelDir) || modelDir})` : ''}\n`,
  );
  return victim;
}

/** Client detection from the flags (undefined without it); the command fails for flags it cannot use. */
async function demoDetection(
  flags: ServeFlags,
  modelDir: string,
  dataset: Dataset,
  noiseSecret: string | undefined,
): Promise<Awaited<ReturnType<typeof serveDetection>>> {
  const features = dataset.train.x.length / dataset.train.rows;
  let detecting: Awaited<ReturnType<typeof serveDetection>>;
  try {
    // The first half of the test split calibrates HODA; a client of the demo may send the other half.
    detecting = await serveDetection(
      flags,
      modelDir,
      { x: dataset.test.x.subarray(0, Math.min(5000, dataset.test.rows) * features), rows: Math.min(5000, dataset.test.rows) },
      noiseSecret,
    );
  } catch (error) {
    if (error instanceof ServingOptionError) fail(error.message);
    throw error;
  }
  if (detecting) process.stderr.write(`${detecting.summary}\n`);
  return detecting;
}

/** The surrogate the defense or the detectors need (undefined when none does): --surrogate, or a seeded untrained MLP. */
async function demoSurrogate(
  surrogateSource: ReturnType<typeof surrogateSourceFromFlags>,
  needs: readonly string[],
  detecting: boolean,
  modelDir: string,
  dataset: Dataset,
): Promise<SurrogateModel | undefined> {
  const features = dataset.train.x.length / dataset.train.rows;
  let surrogate: SurrogateModel | undefined;
  try {
    surrogate =
      needs.length === 0 && !detecting
        ? undefined
        : surrogateSource
          ? await loadSurrogate({ ...surrogateSource, check: { victim: modelDir } })
          : Surrogate.random({ arch: 'mlp', inputShape: [features], classes: dataset.classes, seed: 7 });
  } catch (error) {
    if (error instanceof ModelError) fail(error.message);
    throw error;
  }
  if (surrogate) {
    try {
      checkSurrogateForNeeds(needs as ContextNeed[], surrogate);
    } catch (error) {
      if (error instanceof ServingOptionError) fail(error.message);
      throw error;
    }
  }
  return surrogate;
}

/** Writes a request with one MNIST test image and prints where the demo serves and how to ask it. */
async function printReady(server: Server, flags: ServeFlags, port: number, cacheRoot: string, dataset: Dataset, defenseSpec: string): Promise<void> {
  const features = dataset.train.x.length / dataset.train.rows;
  const address = server.address();
  const base = `http://${flags.host}:${typeof address === 'object' && address ? address.port : port}`;
  const requestFile = join(cacheRoot, 'demo-request.json');
  const image = Array.from(dataset.test.x.subarray(0, features), (v) => Math.round(v * 255));
  await mkdir(dirname(requestFile), { recursive: true });
  await writeFile(requestFile, `${JSON.stringify({ inputs: [{ name: DEMO_INPUT_NAME, shape: [1, features], datatype: 'UINT8', data: image }] })}\n`);
  // Relative only below the working directory; elsewhere (the installed package's cache) the absolute path pastes anywhere.
  const below = relative(process.cwd(), requestFile);
  const shown = below && !below.startsWith('..') && !isAbsolute(below) ? below : requestFile;
  process.stdout.write(
    [
      `demo model server on ${base}, defense ${defenseSpec}`,
      `  an MNIST test image (a ${dataset.test.labels[0]}), defended answer:`,
      `    curl -s -H 'content-type: application/json' -d @${shown} ${base}/v2/models/${MODEL_NAME}/infer`,
      `  metadata ${base}/v2/models/${MODEL_NAME}   health ${base}/v2/health/ready   metrics ${base}/metrics${flags.metricsTokenEnv !== undefined ? ` (bearer token from ${flags.metricsTokenEnv})` : ''}`,
      '',
    ].join('\n'),
  );
}

async function serveDemo(flags: ServeFlags): Promise<void> {
  const port = integerFlag(flags.port, '--port', 0, fail);
  const epochs = integerFlag(flags.epochs, '--epochs', 1, fail);
  const shutdownTimeoutMs = integerFlag(flags.shutdownTimeoutMs, '--shutdown-timeout-ms', 1, fail);
  const batching = batchingFromFlags(flags, fail);
  const surrogateSource = surrogateSourceFromFlags(flags, fail);
  const noiseSecret = flags.secret ?? process.env.MSD_NOISE_SECRET;
  const needs = defenseNeeds(flags.defense, noiseSecret);
  let metricsToken: string | undefined;
  try {
    metricsToken = flags.metricsTokenEnv !== undefined ? tokenFrom(process.env, flags.metricsTokenEnv, '--metrics-token-env') : undefined;
  } catch (error) {
    fail((error as Error).message);
  }

  await initBackend();
  const cacheRoot = defaultCacheRoot();
  const dataset = await loadDataset('mnist', { log: (line) => process.stderr.write(`${line}\n`) });
  const modelDir = flags.modelDir ?? join(cacheRoot, 'models', 'demo-mnist-mlp');
  const victim = await demoVictim(dataset, modelDir, epochs);
  const detecting = await demoDetection(flags, modelDir, dataset, noiseSecret);
  const surrogate = await demoSurrogate(surrogateSource, needs, detecting !== undefined, modelDir, dataset);
  // The surrogate's and the victim's forward passes are asynchronous and batched: a large request cannot stall the others.
  const context = surrogate ? batchedSurrogateContext({ surrogate }, batching) : undefined;
  let demo: DemoApp | undefined;
  try {
    demo = buildDemoApp({
      model: victim.model,
      modelName: MODEL_NAME,
      defense: parseDefense(flags.defense, { noiseSecret }),
      context,
      batching,
      tiers: detecting?.setup.tiers,
      clients: detecting?.clients,
      logger: createLogger({ level: flags.logLevel }),
      ...(metricsToken !== undefined ? { metricsToken } : {}),
    });
    const server = await new Promise<Server>((resolve, reject) => {
      const s = demo!.app.listen(port, flags.host, () => resolve(s));
      s.once('error', reject);
    });
    const draining = drainingServer(server);
    // Signals are handled from the moment the port is open: the ready line below may be read, and a
    // SIGTERM sent, at once.
    closeOnSignals(async () => {
      // The answers in flight finish first (up to --shutdown-timeout-ms); the models are disposed after.
      await draining.close(shutdownTimeoutMs);
      await demo?.close();
      await context?.close();
      surrogate?.dispose();
      detecting?.dispose();
      victim.model.dispose();
    });
    await printReady(server, flags, port, cacheRoot, dataset, demo.guard.defense.spec);
  } catch (error) {
    if (error instanceof ServingOptionError || (error as NodeJS.ErrnoException).code === 'EADDRINUSE') fail((error as Error).message);
    throw error;
  }
}
