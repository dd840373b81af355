/**
 * A child process of bench/server-detection.ts. Roles:
 *   stub                 a KServe V2 stub answering fixed probabilities (no model work)
 *   proxy UPSTREAM MODE  the defense proxy (rounding) with client detection MODE: off | memory | REDIS_URL | REDIS_URL#nocache
 *                        (#nocache: the Redis store reads each client before every update, as before its cache)
 * The detection is a counter per client (test/server/helpers/count-detection.ts) that never flags:
 * the figures are the serving layer's cost (identity, store read, atomic update, observation), not a detector's.
 * Sends {type: "ready", url}; answers {type: "cpu"} with its CPU microseconds.
 */
import { startDefenseProxy, type ProxyOptions } from '../src/server/proxy.js';
import { countDetection } from '../test/server/helpers/count-detection.js';
import { startStubUpstream } from '../test/server/helpers/stub-upstream.js';

const [role, upstream, mode] = process.argv.slice(2);
const CLASSES = 10;
const row = Array.from({ length: CLASSES }, (_, c) => (c === 3 ? 0.55 : 0.45 / (CLASSES - 1)));

let url: string;
if (role === 'stub') {
  url = (await startStubUpstream('kserve-v2', [row], { record: false })).url;
} else {
  const clients: ProxyOptions['clients'] =
    mode === 'off' ? undefined : { identity: 'header:x-api-key', detection: countDetection({}, { record: false }), store: mode.startsWith('memory') ? 'memory' : mode.endsWith('#nocache') ? { redis: mode.slice(0, -'#nocache'.length), cachedClients: 0 } : { redis: mode }, observeInputs: !mode.endsWith('-noinputs') };
  url = (await startDefenseProxy({ upstream, defense: 'rounding:decimals=3', timeoutMs: 10_000, clients })).url;
}
process.on('SIGINT', () => process.exit(0));
process.on('message', (message: { type: string }) => {
  if (message.type === 'cpu') {
    const { user, system } = process.cpuUsage();
    process.send!({ type: 'cpu', micros: user + system });
  }
});
process.send!({ type: 'ready', url });
