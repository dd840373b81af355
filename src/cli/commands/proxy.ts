/** `proxy`: the defense proxy in front of any model server (KServe V2, TF Serving, or JSON at given paths). */
import cluster from 'node:cluster';
import type { Command } from 'commander';
import { batchingFromFlags } from '../flags/batching-flags.js';
import { inputOptionsFromFlags } from '../flags/image-flags.js';
import { addClientFlags, clientOptionsFromFlags, tokenFrom, type ClientFlags } from '../flags/client-flags.js';
import { addDetectionFlags, detectionFromFlags, tierNeeds, type DetectionFlags, type DetectionSetup } from '../flags/detection-flags.js';
import {
  addHodaFlags,
  checkHardnessRead,
  checkHodaFlags,
  HODA_FLAG_NAMES,
  hodaFromFlags,
  type HodaFlags,
  type HodaSetup,
  withPopulationHoda,
} from '../flags/hoda-flags.js';
import {
  addProxyFlags,
  metricsLine,
  readProxyConfigFile,
  resolveProxySettings,
  SHADOW_FLAG_KEYS,
  type ProxySettings as TableSettings,
  type ShadowSettings,
} from '../config/proxy-config.js';
import { surrogateSourceFromFlags, type SurrogateSource } from '../flags/surrogate-flags.js';
import { DefenseError, parseDefense, type ContextNeed } from '../../defenses/index.js';
import type { BatchingOptions } from '../../server/batching/options.js';
import { ServingOptionError } from '../../server/errors.js';
import { closeOnSignals } from '../../server/lifecycle.js';
import { createLogger } from '../../server/logger.js';
import { startDefenseProxy, type ProxyOptions, type RunningProxy } from '../../server/proxy.js';
import { PROTOCOLS, type ProtocolConfig, type ProtocolName } from '../../server/protocols/index.js';

/** The settings table's, plus the client detection flags (command line only; see client-flags.ts and detection-flags.ts). */
type ProxySettings = TableSettings & ClientFlags & DetectionFlags & HodaFlags;

const CLIENT_FLAG_NAMES = [
  'clientId',
  'trustProxy',
  'redis',
  'clientFailMode',
  'anonymous',
  'adminTokenEnv',
  'adminPath',
  'idSecretEnv',
  'maxClients',
  'clientTtlS',
  'detection',
  'tier',
  ...HODA_FLAG_NAMES,
] as const;

function protocolConfig(flags: ProxySettings): ProtocolConfig {
  const name = flags.protocol as ProtocolName;
  if (!PROTOCOLS.includes(name)) throw new ServingOptionError(`--protocol must be one of ${PROTOCOLS.join(', ')}, got "${flags.protocol}"`);
  if (name === 'kserve-v2') return { name, outputName: flags.outputName, inputName: flags.inputName };
  if (name === 'tf-serving') return { name, outputKey: flags.outputKey, inputKey: flags.inputKey };
  if (!flags.probsPath)
    throw new ServingOptionError('--protocol json-path needs --probs-path (e.g. "predictions[*].scores") and --infer-route (e.g. "POST /predict")');
  return { name, probsPath: flags.probsPath, inputsPath: flags.inputsPath };
}

export type ProxyStartOptions = ProxyOptions & { port: number; host: string; detectionSetup?: DetectionSetup; hoda?: HodaSetup };

/** Checks what can be checked without loading a model (the defense spec, its needs, the protocol): the cluster primary runs only this. */
export function checkProxySettings(flags: ProxySettings): void {
  protocolConfig(flags);
  metricsAccessOf(flags);
  neededContext(flags, flags.secret);
  inputOptionsFromFlags(flags);
  batchingFromFlags(flags, refuse);
  detectionFor(flags);
  checkHodaFlags(flags);
  shadowSettingsOf(flags);
}

/**
 * The shadow attacker's settings: the config file's `shadow` object (or --shadow JSON), its members
 * overridden by the --shadow-* flags; undefined when none is given (the shadow is off).
 */
export function shadowSettingsOf(flags: TableSettings): ShadowSettings | undefined {
  const settings: ShadowSettings = { ...flags.shadow };
  for (const [key, inner] of Object.entries(SHADOW_FLAG_KEYS)) {
    const value = flags[key as keyof typeof SHADOW_FLAG_KEYS];
    if (value !== undefined) (settings as Record<string, unknown>)[inner] = value;
  }
  if (Object.keys(settings).length === 0) return undefined;
  if (settings.heldOut === undefined) {
    throw new ServingOptionError(
      'the shadow attacker needs labelled held-out data to score its knockoffs on: pass --shadow-held-out PATH (or shadow.heldOut in the config file)',
    );
  }
  return settings;
}

/** The shadow's options: the held-out data (and the model's answers on it) read from their paths, as requests are read. */
async function shadowOptionsFrom(settings: ShadowSettings, inputs: ProxyOptions['inputs']): Promise<NonNullable<ProxyOptions['shadow']>> {
  const { readHeldOutRows } = await import('../flags/held-out.js');
  const { heldOut: heldOutPath, heldOutAnswers, ...rest } = settings;
  const held = await readHeldOutRows(heldOutPath!, { flag: '--shadow-held-out', inputs, requireLabels: true });
  let answers: Float32Array | undefined;
  if (heldOutAnswers !== undefined) {
    const read = await readHeldOutRows(heldOutAnswers, { flag: '--shadow-held-out-answers' });
    if (read.rows !== held.rows)
      throw new ServingOptionError(`--shadow-held-out-answers ${heldOutAnswers}: ${read.rows} rows of answers for ${held.rows} held-out rows`);
    for (let r = 0; r < read.rows; r++) {
      let sum = 0;
      for (let c = 0; c < read.features; c++) sum += read.x[r * read.features + c];
      if (Math.abs(sum - 1) > 0.01)
        throw new ServingOptionError(
          `--shadow-held-out-answers ${heldOutAnswers}: row ${r} sums to ${sum.toFixed(3)}; give the model’s probabilities (rows × classes, each row summing to 1)`,
        );
    }
    answers = read.x;
  }
  return {
    ...(rest as Omit<NonNullable<ProxyOptions['shadow']>, 'heldOut'>),
    heldOut: { x: held.x, rows: held.rows, labels: held.labels!, answers, source: held.source },
  };
}

/** Client detection from --client-id (undefined without it; its other flags are then refused). */
function detectionFor(flags: ProxySettings): DetectionSetup | undefined {
  // Workers are separate processes: with memory stores a client's queries would be split between them.
  if (flags.clientId && flags.workers > 1 && !flags.redis)
    throw new ServingOptionError(
      `--workers ${flags.workers} with --client-id needs --redis URL (each worker would keep its own part of a client's history), or --workers 1`,
    );
  const detecting = detectionFromFlags(flags, surrogateSourceFromFlags(flags, refuse) !== undefined, flags.secret);
  clientOptionsFromFlags(flags, process.env, detecting?.detection);
  return detecting;
}

/** Who may read /metrics: a bearer token from the environment, public, or nobody (the default). */
function metricsAccessOf(flags: ProxySettings): Pick<ProxyOptions, 'metricsToken' | 'metricsPublic'> {
  if (flags.metricsTokenEnv !== undefined && flags.metricsPublic)
    throw new ServingOptionError('--metrics-token-env and --metrics-public: give one (a token, or a public /metrics on a port clients cannot reach)');
  if (flags.metricsTokenEnv === undefined) return { metricsPublic: flags.metricsPublic };
  return { metricsToken: tokenFrom(process.env, flags.metricsTokenEnv, '--metrics-token-env') };
}

const refuse = (message: string): never => {
  throw new ServingOptionError(message);
};

function neededContext(flags: ProxySettings, noiseSecret: string | undefined): readonly string[] {
  let needs: readonly string[];
  try {
    needs = parseDefense(flags.defense, { noiseSecret }).needs;
  } catch (error) {
    if (error instanceof DefenseError) throw new ServingOptionError(`defense: ${error.message}`);
    throw error;
  }
  if ((needs.includes('surrogate') || needs.includes('surrogateGram')) && !surrogateSourceFromFlags(flags, refuse)) {
    throw new ServingOptionError(
      `defense "${flags.defense}" needs a surrogate model: pass --surrogate PATH (a TF.js model's JSON file or directory, or an ONNX file), with --reinit SEED for the victim's architecture freshly initialised`,
    );
  }
  if (needs.includes('misinformation'))
    throw new ServingOptionError(
      `defense "${flags.defense}" needs a misinformation model, which the proxy does not load; use it through the middleware (poisonPredictions with a context)`,
    );
  return needs;
}

/** The proxy's options from validated settings; loads the surrogate when the defense needs one. */
export async function proxyOptionsFromSettings(flags: ProxySettings): Promise<ProxyStartOptions> {
  const options: ProxyStartOptions = {
    upstream: flags.upstream,
    protocol: protocolConfig(flags),
    defense: flags.defense,
    inputFormat: flags.logits ? 'logits' : 'probs',
    noiseSecret: flags.secret,
    onFailure: flags.onFailure as ProxyOptions['onFailure'],
    timeoutMs: flags.timeoutMs,
    maxBodyBytes: flags.maxBody,
    inferRoutes: flags.inferRoutes,
    passRoutes: flags.passRoutes,
    passUnknownRoutes: flags.passUnknownRoutes,
    upstreamHealthPath: flags.upstreamHealthPath,
    ...metricsAccessOf(flags),
    port: flags.port,
    host: flags.host,
    logger: createLogger({ level: flags.logLevel }),
  };
  let needs = neededContext(flags, options.noiseSecret);
  const inputs = inputOptionsFromFlags(flags);
  if (inputs) options.inputs = inputs;
  // The shadow's held-out data: read before anything that must be disposed on a failure.
  const shadow = shadowSettingsOf(flags);
  if (shadow) options.shadow = await shadowOptionsFrom(shadow, inputs);
  // HODA's calibration goes into the detection options, so it is loaded first.
  const hoda = await hodaFromFlags(flags, inputs);
  let detecting: DetectionSetup | undefined;
  try {
    detecting = detectionFor(hoda ? { ...flags, detection: hoda.detection } : flags);
  } catch (error) {
    hoda?.dispose();
    throw error;
  }
  if (detecting) {
    options.tiers = detecting.tiers;
    options.clients = clientOptionsFromFlags(flags, process.env, detecting.detection);
    if (hoda) {
      options.clients!.hardness = hoda.hardness;
      options.hoda = hoda;
      const given = options.clients!.population;
      if (given) {
        const { population, note } = withPopulationHoda(given, hoda.heldOut);
        options.clients!.population = population;
        options.hoda = { ...hoda, summary: `${hoda.summary}; ${note}` };
      }
      try {
        checkHardnessRead(hoda, options.clients!.population);
      } catch (error) {
        hoda.dispose();
        throw error;
      }
    }
    options.detectionSetup = detecting;
    needs = [...new Set([...needs, ...tierNeeds(detecting.tiers, options.noiseSecret)])];
  }
  const batching = batchingFromFlags(flags, refuse);
  if (needs.length > 0) options.context = await contextFor(surrogateSourceFromFlags(flags, refuse), batching, needs as ContextNeed[]);
  return options;
}

/**
 * The defense context from the request's inputs (decoded and scaled by the inputs stage): the
 * surrogate's forward passes batched and bounded (see server/batching) when a surrogate is given.
 */
async function contextFor(
  source: SurrogateSource | undefined,
  batching: BatchingOptions,
  needs: readonly ContextNeed[],
): Promise<NonNullable<ProxyOptions['context']>> {
  // Loaded on demand: proxies without a surrogate never start TensorFlow.js.
  const { surrogateContext, checkSurrogateForNeeds } = await import('../../server/surrogate-context.js');
  const { batchedSurrogateContext } = await import('../../server/batching/batched-context.js');
  const models = await import('../../models/index.js');
  if (!source) return surrogateContext({}, { needs });
  await models.initBackend();
  let surrogate: Awaited<ReturnType<typeof models.loadSurrogate>>;
  try {
    surrogate = await models.loadSurrogate(source);
  } catch (error) {
    if (error instanceof models.ModelError) throw new ServingOptionError(`surrogate: ${error.message}`);
    throw error;
  }
  checkSurrogateForNeeds(needs, surrogate);
  return batchedSurrogateContext({ surrogate }, batching);
}

/** Reads the config file (if any), merges the flags and the environment, and validates it all. */
export async function proxySettingsFrom(flags: Record<string, unknown>): Promise<ProxySettings> {
  const file = typeof flags.config === 'string' ? { name: flags.config, values: await readProxyConfigFile(flags.config) } : undefined;
  const settings: ProxySettings = resolveProxySettings(flags, file);
  for (const name of CLIENT_FLAG_NAMES) if (flags[name] !== undefined) (settings as unknown as Record<string, unknown>)[name] = flags[name];
  checkProxySettings(settings);
  return settings;
}

/** Starts one proxy in this process; `metricsText` replaces its /metrics source (a cluster worker's aggregate). */
export async function startProxyProcess(
  settings: ProxySettings,
  { announce, metricsText }: { announce: boolean; metricsText?: () => Promise<string> },
): Promise<RunningProxy> {
  const { detectionSetup, hoda, ...options } = await proxyOptionsFromSettings(settings);
  if (metricsText) options.metricsText = metricsText;
  let running: RunningProxy;
  try {
    running = await startDefenseProxy(options);
  } catch (error) {
    hoda?.dispose();
    throw error;
  }
  if (hoda) {
    const close = running.close.bind(running);
    running.close = async (...args: Parameters<RunningProxy['close']>) => {
      try {
        return await close(...args);
      } finally {
        hoda.dispose();
      }
    };
  }
  if (announce)
    process.stderr.write(
      `proxy: ${running.url} → ${settings.upstream} (${settings.protocol}), defense ${running.proxy.defense.spec}, ${metricsLine(settings, running.url)}, health at /healthz and /readyz\n`,
    );
  if (announce && running.proxy.shadow) process.stderr.write(`proxy: ${running.proxy.shadow.summary}\n`);
  if (announce && detectionSetup) {
    const ladder = detectionSetup.ladder.map((step) => (detectionSetup.tiers[step] ? `${step} (${detectionSetup.tiers[step]})` : step)).join(' → ');
    process.stderr.write(
      `proxy: client detection by ${settings.clientId} (${settings.redis ? 'Redis' : 'memory'} store), escalation ${ladder}${detectionSetup.notice ? `; ${detectionSetup.notice}` : ''}; ${hoda ? hoda.summary : 'HODA off (--hoda-checkpoints turns it on)'}\n`,
    );
  }
  return running;
}

export function registerProxyCommand(program: Command): void {
  const command = program
    .command('proxy')
    .description('run the defense proxy in front of a model server: inference answers are defended, health and metadata routes pass through');
  addHodaFlags(addDetectionFlags(addClientFlags(addProxyFlags(command)))).action(async (flags: Record<string, unknown>) => {
    try {
      const settings = await proxySettingsFrom(flags);
      if (settings.workers > 1 || cluster.isWorker) {
        await (await import('./proxy-cluster.js')).runProxyCluster(settings, startProxyProcess);
        return;
      }
      const running = await startProxyProcess(settings, { announce: true });
      closeOnSignals(() => running.close(settings.shutdownTimeoutMs));
    } catch (error) {
      if (error instanceof ServingOptionError || error instanceof DefenseError || (error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        process.stderr.write(`proxy: ${(error as Error).message}\n`);
        process.exit(2);
      }
      throw error;
    }
  });
}
