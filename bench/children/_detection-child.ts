/**
 * A child process of bench/server/server-detection.ts. Roles:
 *   stub                 a KServe V2 stub answering fixed probabilities (no model work)
 *   model                the demo's MNIST MLP (tfjs, this process's backend) served over KServe V2, undefended:
 *                        an upstream with real model work per request
 *   proxy UPSTREAM MODE  the defense proxy (rounding) with client detection MODE: off | memory | memory-noinputs |
 *                        memory+population | memory+above | REDIS_URL | REDIS_URL#nocache | REDIS_URL#population | REDIS_URL#above
 *                        (#nocache: the Redis store reads each client before every update, as before its cache;
 *                        +population / #population: cohorts by IP prefix and population detection on too;
 *                        +above / #above: and fingerprints)
 * The detection is a counter per client (test/server/helpers/count-detection.ts) that never flags:
 * the figures are the serving layer's cost (identity, store read, atomic update, observation; with
 * "above", the cohort's update, the fingerprints' lookup and write and the population's counts and
 * judgement), not a per-client detector's.
 * Sends {type: "ready", url}; answers {type: "cpu"} with its CPU microseconds.
 */
import type { Server } from 'node:http';
import { join } from 'node:path';
import { buildDemoApp } from '../../src/demo/app.js';
import { loadOrTrainDemoVictim } from '../../src/demo/victim.js';
import { parseDefense } from '../../src/defenses/index.js';
import { defaultCacheRoot, loadDataset } from '../../src/eval/world/datasets.js';
import { initBackend } from '../../src/models/index.js';
import { startDefenseProxy, type ProxyOptions } from '../../src/server/proxy.js';
import { countDetection } from '../../test/server/helpers/count-detection.js';
import { startStubUpstream } from '../../test/server/helpers/stub-upstream.js';

const [role, upstream, mode] = process.argv.slice(2);
const CLASSES = 10;
const row = Array.from({ length: CLASSES }, (_, c) => (c === 3 ? 0.55 : 0.45 / (CLASSES - 1)));

let url: string;
if (role === 'stub') {
  url = (await startStubUpstream('kserve-v2', [row], { record: false })).url;
} else if (role === 'model') {
  // The demo's victim (`msd serve` trains and caches it on its first start; so does this).
  await initBackend();
  const dataset = await loadDataset('mnist');
  const victim = await loadOrTrainDemoVictim({
    dir: join(defaultCacheRoot(), 'models', 'demo-mnist-mlp'),
    train: dataset.train,
    test: dataset.test,
    features: dataset.train.x.length / dataset.train.rows,
    classes: dataset.classes,
    epochs: 3,
    batchSize: 128,
  });
  const demo = buildDemoApp({ model: victim.model, modelName: 'mnist', defense: parseDefense('none'), processMetrics: false });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = demo.app.listen(0, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address();
  url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
} else {
  const above = mode.endsWith('+above') || mode.endsWith('#above');
  const population = above || mode.endsWith('+population') || mode.endsWith('#population');
  const base = mode.replace(/[+#](above|population)$/, '');
  const store = base.startsWith('memory')
    ? ('memory' as const)
    : base.endsWith('#nocache')
      ? { redis: base.slice(0, -'#nocache'.length), cachedClients: 0 }
      : { redis: base };
  const clients: ProxyOptions['clients'] =
    mode === 'off'
      ? undefined
      : {
          identity: 'header:x-api-key',
          detection: countDetection({}, { record: false }),
          store,
          observeInputs: !base.endsWith('-noinputs'),
          ...(population ? { cohort: 'ip', population: {}, probationTier: 'argmax' } : {}),
          ...(above ? { fingerprints: {} } : {}),
        };
  url = (
    await startDefenseProxy({ upstream, defense: 'rounding:decimals=3', timeoutMs: 10_000, clients, ...(population ? { tiers: { argmax: 'argmax' } } : {}) })
  ).url;
}
process.on('SIGINT', () => process.exit(0));
process.on('message', (message: { type: string }) => {
  if (message.type === 'cpu') {
    const { user, system } = process.cpuUsage();
    process.send!({ type: 'cpu', micros: user + system });
  }
});
process.send!({ type: 'ready', url });
