/**
 * A child process of the server benchmarks: `stub` starts a KServe V2 stub model server, `proxy`
 * the defense proxy in front of one. It sends {url} to the parent once listening, and answers
 * {type: "memory"} with its heap (after a full GC) and tfjs tensor count.
 */
import { startDefenseProxy } from '../src/server/proxy.js';
import { startStubUpstream } from '../test/server/helpers/stub-upstream.js';
import { benchContext } from './_server-context.js';

const [role, upstream, defense, classes] = process.argv.slice(2);
const k = Number(classes ?? 10);
const row = Array.from({ length: k }, (_, c) => (c === 3 ? 0.55 : 0.45 / (k - 1)));

async function memory(): Promise<{ numTensors: number; heapUsed: number }> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  const numTensors = role === 'proxy' && defense.includes('mad') ? (await import('../src/models/tf.js')).tf.memory().numTensors : 0;
  return { numTensors, heapUsed: process.memoryUsage().heapUsed };
}

let url: string;
if (role === 'stub') {
  url = (await startStubUpstream('kserve-v2', [row], { record: false })).url;
} else {
  const context = defense.includes('mad') ? await benchContext(k) : undefined;
  const running = await startDefenseProxy({ upstream, defense, context, timeoutMs: 10_000 });
  url = running.url;
}
process.on('message', (message: { type: string }) => {
  if (message.type === 'memory') void memory().then((m) => process.send!({ type: 'memory', ...m }));
});
process.send!({ type: 'ready', url });
