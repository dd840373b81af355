/** `proxy`: the defense proxy in front of any model server (KServe V2, TF Serving, or JSON at given paths). */
import type { Command } from 'commander';
import { addBatchingFlags, batchingFromFlags, type BatchingFlags } from './batching-flags.js';
import { integerFlag } from './flags.js';
import { inputOptionsFromFlags, registerInputFlags, type InputFlags } from './image-flags.js';
import { addSurrogateFlags, surrogateSourceFromFlags, type SurrogateFlags, type SurrogateSource } from './surrogate-flags.js';
import { DefenseError, parseDefense, type ContextNeed } from '../defenses/index.js';
import type { SurrogateModel } from '../models/surrogate-model.js';
import type { BatchingOptions } from '../server/batching/options.js';
import { ServingOptionError } from '../server/errors.js';
import { closeOnSignals } from '../server/lifecycle.js';
import { createLogger } from '../server/logger.js';
import { startDefenseProxy, type ProxyOptions } from '../server/proxy.js';
import { PROTOCOLS, type ProtocolConfig, type ProtocolName } from '../server/protocols/index.js';

interface ProxyFlags extends InputFlags, BatchingFlags, SurrogateFlags {
  upstream: string;
  protocol: string;
  defense: string;
  port: string;
  host: string;
  timeoutMs: string;
  maxBody: string;
  outputName?: string;
  inputName?: string;
  outputKey?: string;
  inputKey?: string;
  probsPath?: string;
  inputsPath?: string;
  inferRoute: string[];
  passRoute: string[];
  passUnknownRoutes?: boolean;
  onFailure: string;
  logits?: boolean;
  secret?: string;
  logLevel: string;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

const integer = (value: string, flag: string): number =>
  integerFlag(value, flag, 0, (message) => {
    throw new ServingOptionError(message);
  });

function protocolConfig(flags: ProxyFlags): ProtocolConfig {
  const name = flags.protocol as ProtocolName;
  if (!PROTOCOLS.includes(name)) throw new ServingOptionError(`--protocol must be one of ${PROTOCOLS.join(', ')}, got "${flags.protocol}"`);
  if (name === 'kserve-v2') return { name, outputName: flags.outputName, inputName: flags.inputName };
  if (name === 'tf-serving') return { name, outputKey: flags.outputKey, inputKey: flags.inputKey };
  if (!flags.probsPath) throw new ServingOptionError('--protocol json-path needs --probs-path (e.g. "predictions[*].scores") and --infer-route (e.g. "POST /predict")');
  return { name, probsPath: flags.probsPath, inputsPath: flags.inputsPath };
}

export async function proxyOptionsFromFlags(flags: ProxyFlags): Promise<ProxyOptions & { port: number; host: string }> {
  const options: ProxyOptions & { port: number; host: string } = {
    upstream: flags.upstream,
    protocol: protocolConfig(flags),
    defense: flags.defense,
    inputFormat: flags.logits ? 'logits' : 'probs',
    noiseSecret: flags.secret ?? process.env.MSD_NOISE_SECRET,
    onFailure: flags.onFailure as ProxyOptions['onFailure'],
    timeoutMs: integer(flags.timeoutMs, '--timeout-ms'),
    maxBodyBytes: integer(flags.maxBody, '--max-body'),
    inferRoutes: flags.inferRoute,
    passRoutes: flags.passRoute,
    passUnknownRoutes: flags.passUnknownRoutes === true,
    port: integer(flags.port, '--port'),
    host: flags.host,
    logger: createLogger({ level: flags.logLevel }),
  };
  let needs: readonly string[];
  try {
    needs = parseDefense(flags.defense, { noiseSecret: options.noiseSecret }).needs;
  } catch (error) {
    if (error instanceof DefenseError) throw new ServingOptionError(`defense: ${error.message}`);
    throw error;
  }
  const source = surrogateSourceFromFlags(flags, (message) => {
    throw new ServingOptionError(message);
  });
  if ((needs.includes('surrogate') || needs.includes('surrogateGram')) && !source) {
    throw new ServingOptionError(`defense "${flags.defense}" needs a surrogate model: pass --surrogate DIR (a model directory, e.g. one saved by \`msd train\`), --surrogate-from DIR [--reinit SEED] or --surrogate-onnx FILE`);
  }
  if (needs.includes('misinformation')) throw new ServingOptionError(`defense "${flags.defense}" needs a misinformation model, which the proxy does not load; use it through the middleware (poisonPredictions with a context)`);
  const inputs = inputOptionsFromFlags(flags);
  if (inputs) options.inputs = inputs;
  const batching = batchingFromFlags(flags, (message) => {
    throw new ServingOptionError(message);
  });
  if (needs.length > 0) options.context = await contextFor(source, batching, needs as ContextNeed[]);
  return options;
}

/**
 * The defense context from the request's inputs (decoded and scaled by the inputs stage): the
 * surrogate's forward passes batched and bounded (see server/batching) when a surrogate is given.
 */
async function contextFor(source: SurrogateSource | undefined, batching: BatchingOptions, needs: readonly ContextNeed[]): Promise<NonNullable<ProxyOptions['context']>> {
  // Loaded on demand: proxies without a surrogate never start TensorFlow.js.
  const { surrogateContext, checkSurrogateForNeeds } = await import('../server/surrogate-context.js');
  const { batchedSurrogateContext } = await import('../server/batching/batched-context.js');
  const models = await import('../models/index.js');
  if (!source) return surrogateContext({}, { needs });
  let surrogate: SurrogateModel;
  await models.initBackend();
  try {
    surrogate = await models.loadSurrogate(source);
  } catch (error) {
    if (error instanceof models.ModelError) throw new ServingOptionError(`surrogate: ${error.message}`);
    throw error;
  }
  checkSurrogateForNeeds(needs, surrogate);
  return batchedSurrogateContext({ surrogate }, batching);
}

export function registerProxyCommand(program: Command): void {
  const command = program
    .command('proxy')
    .description('run the defense proxy in front of a model server: inference answers are defended, health and metadata routes pass through')
    .requiredOption('-u, --upstream <url>', 'base URL of the model server, e.g. http://127.0.0.1:8080')
    .option('--protocol <name>', `wire protocol: ${PROTOCOLS.join(', ')}`, 'kserve-v2')
    .option('-d, --defense <spec>', 'defense spec, e.g. "mad-argmax:eps=0.8" (see: msd perturb --list)', 'rounding:decimals=3')
    .option('--surrogate <dir>', 'saved surrogate model for MAD (a model directory); it reads the request inputs as sent')
    .option('-p, --port <n>', 'port to listen on (0: any free port)', '8081')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--timeout-ms <ms>', 'upstream timeout in milliseconds (504 past it)', '30000')
    .option('--max-body <bytes>', 'largest request body on an inference route (413 past it)', String(10 * 1024 * 1024))
    .option('--output-name <name>', 'kserve-v2: the output holding the probabilities (others are dropped)')
    .option('--input-name <name>', 'kserve-v2: the input tensor the surrogate reads')
    .option('--output-key <key>', 'tf-serving: the prediction key holding the probabilities')
    .option('--input-key <key>', 'tf-serving: the instance key holding the model input')
    .option('--probs-path <path>', 'json-path: where the probability rows are, e.g. "predictions[*].scores"')
    .option('--inputs-path <path>', 'json-path: where the input rows are, e.g. "instances"')
    .option('--infer-route <route>', 'an inference route, e.g. "POST /predict" (repeatable)', collect, [])
    .option('--pass-route <route>', 'a route passed through untouched, e.g. "GET /health" (repeatable)', collect, [])
    .option('--pass-unknown-routes', 'pass every unlisted route through untouched (off: unlisted routes get 404)')
    .option('--on-failure <mode>', 'when the defense fails: "error" or "argmax" (label only)', 'error')
    .option('--logits', 'the model answers logits, not probabilities')
    .option('--secret <secret>', 'secret keying deterministic noise (default: env MSD_NOISE_SECRET)')
    .option('--log-level <level>', 'pino log level', 'info');
  addBatchingFlags(command);
  registerInputFlags(addSurrogateFlags(command)).action(async (flags: ProxyFlags) => {
    try {
      const options = await proxyOptionsFromFlags(flags);
      const running = await startDefenseProxy(options);
      process.stderr.write(`proxy: ${running.url} → ${flags.upstream} (${flags.protocol}), defense ${running.proxy.defense.spec}, metrics at ${running.url}/metrics\n`);
      closeOnSignals(async () => {
        await running.close();
        await options.context?.close?.();
      });
    } catch (error) {
      if (error instanceof ServingOptionError || error instanceof DefenseError || (error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        process.stderr.write(`proxy: ${(error as Error).message}\n`);
        process.exit(2);
      }
      throw error;
    }
  });
}
