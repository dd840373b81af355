/**
 * `msd proxy --workers N`: N worker processes (node:cluster) share the port, each a whole proxy
 * with the same settings. The primary only supervises: it restarts a worker that dies, answers the
 * workers' requests for the aggregated metrics (prom-client's AggregatorRegistry), and on SIGTERM
 * or SIGINT tells every worker to drain: stop listening, answer new requests on open connections
 * with 503, finish those in flight within --shutdown-timeout-ms, then exit. On SIGHUP it replaces
 * the workers one at a time (a new one listens before the old one drains), so the port never goes
 * unanswered: a rolling restart that picks up a new surrogate or a changed config file.
 *
 * Without a noise secret each process would draw its own, and the same input would get another
 * noise draw from each worker (averaging them undoes the noise): the primary draws one for all.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { AggregatorRegistry } from 'prom-client';
import type { RunningProxy } from '../../server/proxy.js';
import { metricsLine, type ProxySettings } from '../config/proxy-config.js';

type Message =
  | { type: 'msd:listening'; url: string; defense: string; settings: string }
  | { type: 'msd:metrics-ask'; id: number }
  | { type: 'msd:metrics-answer'; id: number; text?: string; error?: string }
  | { type: 'msd:drain' };

const isMessage = (value: unknown): value is Message =>
  typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string' && (value as { type: string }).type.startsWith('msd:');

/** How long past the drain deadline the primary waits before killing a worker that has not exited. */
const KILL_GRACE_MS = 2000;
/** A worker that dies this soon after starting is not restarted at once, so a crash loop does not spin. */
const RESTART_DELAY_MS = 1000;

/** Starts one proxy in this process (the proxy command's own starter, passed in so the two files do not import each other). */
export type StartProxy = (settings: ProxySettings, how: { announce: boolean; metricsText?: () => Promise<string> }) => Promise<RunningProxy>;

export async function runProxyCluster(settings: ProxySettings, start: StartProxy): Promise<void> {
  if (cluster.isPrimary) runPrimary(settings);
  else await runWorker(settings, start);
}

function runPrimary(settings: ProxySettings): void {
  const log = (line: string): void => void process.stderr.write(`proxy: ${line}\n`);
  // One noise secret for every worker and every replacement, when none is given (see above).
  const workerEnv = settings.secret === undefined ? { MSD_NOISE_SECRET: randomBytes(32).toString('hex') } : {};
  const fork = (): Worker => cluster.fork(workerEnv);
  const aggregator = new AggregatorRegistry();
  const listening = new Set<number>();
  /** Workers draining in a rolling restart: their exit is expected, not replaced. */
  const retiring = new Set<number>();
  /** Replacements not yet listening: one that fails to start leaves the running workers alone. */
  const trial = new Set<number>();
  let announced = false;
  let stopping = false;
  let reloading = false;

  const stopAll = (exitCode: number): void => {
    if (stopping) return;
    stopping = true;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
    if (workers.length === 0) process.exit(exitCode);
    for (const worker of workers) if (worker.isConnected()) worker.send({ type: 'msd:drain' } satisfies Message);
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(exitCode);
    });
    setTimeout(() => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL');
      log(`workers still busy ${KILL_GRACE_MS} ms past the shutdown deadline were killed`);
      process.exit(1);
    }, settings.shutdownTimeoutMs + KILL_GRACE_MS).unref();
  };

  cluster.on('message', (worker, message: unknown) => {
    if (!isMessage(message)) return;
    if (message.type === 'msd:metrics-ask') {
      aggregator.clusterMetrics().then(
        (text) => worker.isConnected() && worker.send({ type: 'msd:metrics-answer', id: message.id, text } satisfies Message),
        (error: Error) => worker.isConnected() && worker.send({ type: 'msd:metrics-answer', id: message.id, error: error.message } satisfies Message),
      );
    } else if (message.type === 'msd:listening') {
      listening.add(worker.id);
      serving = message.settings;
      if (!announced && listening.size >= settings.workers) {
        announced = true;
        log(
          `${message.url} → ${settings.upstream} (${settings.protocol}), ${settings.workers} workers, defense ${message.defense}, ${metricsLine(settings, message.url)}, health at /healthz and /readyz`,
        );
      }
    }
  });

  cluster.on('exit', (worker, code, signal) => {
    listening.delete(worker.id);
    if (stopping || retiring.delete(worker.id) || trial.delete(worker.id)) return;
    // Exit code 2 is a settings or startup error (bad surrogate, port in use): every worker would hit it.
    if (code === 2) {
      log(`a worker could not start (exit code 2); stopping`);
      stopAll(2);
      return;
    }
    log(`worker ${worker.process.pid} exited (${signal ?? `code ${code}`}); starting another`);
    setTimeout(() => stopping || fork(), RESTART_DELAY_MS);
  });

  let signalled = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) process.exit(130);
    signalled = true;
    log(`${signal}: draining ${Object.keys(cluster.workers ?? {}).length} workers (deadline ${settings.shutdownTimeoutMs} ms)`);
    stopAll(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  /** What the workers serve, as the last one to start described it (the settings a reload changes). */
  let serving = '';
  process.on('SIGHUP', () => {
    if (reloading || stopping) return;
    reloading = true;
    const before = serving;
    log('SIGHUP: reloading the settings, replacing the workers one at a time');
    rollingRestart()
      .then(
        () => log(`SIGHUP: every worker replaced; serving ${serving}${serving === before ? ' (unchanged)' : ` (was ${before})`}`),
        (error: Error) => log(`SIGHUP: rolling restart stopped: ${error.message}`),
      )
      .finally(() => (reloading = false));
  });

  /** One worker at a time: start its replacement, wait until it listens, then drain the old one. */
  const rollingRestart = async (): Promise<void> => {
    for (const old of Object.values(cluster.workers ?? {})) {
      if (!old || stopping) continue;
      const fresh = fork();
      trial.add(fresh.id);
      await new Promise<void>((resolve, reject) => {
        const onMessage = (message: unknown) => {
          if (!isMessage(message) || message.type !== 'msd:listening') return;
          fresh.off('exit', onExit);
          trial.delete(fresh.id);
          resolve();
        };
        const onExit = (code: number) => reject(new Error(`a new worker exited with code ${code} before listening; the old ones keep serving`));
        fresh.on('message', onMessage);
        fresh.once('exit', onExit);
      });
      retiring.add(old.id);
      const exited = new Promise<void>((resolve) => old.once('exit', () => resolve()));
      if (old.isConnected()) old.send({ type: 'msd:drain' } satisfies Message);
      // A worker stuck past its drain deadline must not hold the rolling restart forever.
      const stuck = setTimeout(() => {
        log(`worker ${old.process.pid} still busy ${KILL_GRACE_MS} ms past the drain deadline; killed`);
        old.process.kill('SIGKILL');
      }, settings.shutdownTimeoutMs + KILL_GRACE_MS);
      await exited;
      clearTimeout(stuck);
    }
  };
  for (let i = 0; i < settings.workers; i += 1) fork();
}

async function runWorker(settings: ProxySettings, start: StartProxy): Promise<void> {
  const pending = new Map<number, { resolve: (text: string) => void; reject: (error: Error) => void }>();
  let next = 0;
  // The primary aggregates every worker's registry; a worker that receives /metrics asks it.
  const metricsText = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      process.send?.({ type: 'msd:metrics-ask', id } satisfies Message);
    });
  new AggregatorRegistry(); // installs the listener that answers the primary's requests for this worker's metrics
  const running = await start(settings, { announce: false, metricsText });
  AggregatorRegistry.setRegistries([running.proxy.metrics.registry]);

  let draining: Promise<void> | undefined;
  const drain = (): Promise<void> =>
    (draining ??= running.close(settings.shutdownTimeoutMs).then(() => {
      process.disconnect?.();
      process.exit(0);
    }));
  process.on('message', (message: unknown) => {
    if (!isMessage(message)) return;
    if (message.type === 'msd:drain') void drain();
    else if (message.type === 'msd:metrics-answer') {
      const waiting = pending.get(message.id);
      pending.delete(message.id);
      if (message.text !== undefined) waiting?.resolve(message.text);
      else waiting?.reject(new Error(message.error ?? 'no metrics from the primary'));
    }
  });
  // Ctrl-C reaches the whole process group: the primary coordinates the drain. A SIGTERM sent to
  // this worker alone, or a primary that went away, drains this worker.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => void drain());
  process.on('disconnect', () => void drain());
  process.send?.({
    type: 'msd:listening',
    url: running.url,
    defense: running.proxy.defense.spec,
    settings: describeSettings(settings, running.proxy.defense.spec),
  } satisfies Message);
}

/** The settings a reload may change, in one line for the log (no secrets: the noise secret is not named). */
function describeSettings(settings: ProxySettings, defense: string): string {
  const parts = [
    `defense ${defense}`,
    `upstream ${settings.upstream} (${settings.protocol})`,
    `timeout ${settings.timeoutMs} ms`,
    `max body ${settings.maxBody} bytes`,
  ];
  const surrogate = settings.surrogate ?? settings.surrogateFrom ?? settings.surrogateOnnx;
  if (surrogate) parts.push(`surrogate ${surrogate}${settings.reinit !== undefined ? ` (reinit ${settings.reinit})` : ''}`);
  if (settings.onFailure !== 'error') parts.push(`on failure ${settings.onFailure}`);
  return parts.join(', ');
}
