/**
 * The gate's own cost per request, in process (no HTTP), with each part of detection above the
 * client on alone and all together: cohorts (by IP prefix, one hot cohort), population detection
 * (two views, judged every request), fingerprints (a 784-value row: fingerprint, lookup and write in
 * the memory store). The per-client detection is a counter (test/server/helpers/count-detection.ts),
 * so the figures are the serving layer's cost, not a detector's. Each request carries its own image.
 * CPU time of this process per request (not wall time: on a shared machine the process often waits
 * for a core), the best of --rounds rounds, the modes taking turns within each round.
 *
 *   npm run bench -- gate-above [--requests 20000] [--rounds 5]
 */
import { parseDefense } from '../../src/defenses/index.js';
import type { IncomingMessage } from 'node:http';
import { createClientGate } from '../../src/server/clients/gate.js';
import type { ClientsOptions } from '../../src/server/clients/options.js';
import { createServingMetrics } from '../../src/server/metrics.js';
import { countDetection } from '../../test/server/helpers/count-detection.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const requests = Number(args.get('requests') ?? 20_000);
const rounds = Number(args.get('rounds') ?? 5);
const defense = parseDefense('rounding:decimals=3');
const tiers = new Map([['argmax', parseDefense('argmax')]]);
// A confident answer over varied classes: no population alarm (the steady state).
const probsOf = (n: number) => ({ rows: 1, cols: 10, data: Float32Array.from({ length: 10 }, (_, c) => (c === n % 10 ? 0.91 : 0.01)) });
const answers = Array.from({ length: 10 }, (_, n) => probsOf(n));
const inputs = Array.from({ length: 5000 }, (_, n) => {
  let h = (n + 1) * 0x9e3779b1;
  const data = new Float32Array(784);
  for (let i = 0; i < 784; i++) {
    h = Math.imul(h ^ (h >>> 15), 0x85ebca6b) >>> 0;
    data[i] = h % 5 === 0 ? (h >>> 8) % 256 : 0;
  }
  return { rows: 1, cols: 784, data };
});
const reqs = Array.from(
  { length: 1000 },
  (_, i) => ({ headers: { 'x-api-key': `key-${i}` }, socket: { remoteAddress: '127.0.0.1' } }) as unknown as IncomingMessage,
);

async function perRequest(extra: Partial<ClientsOptions>): Promise<number> {
  const gate = createClientGate(
    { identity: 'header:x-api-key', detection: countDetection({}, { record: false }), probationTier: 'argmax', ...extra } as ClientsOptions<never>,
    {
      defense,
      tiers,
      metrics: createServingMetrics(),
    },
  );
  const run = async (n: number, from: number) => {
    for (let i = from; i < from + n; i++) await gate.observe(await gate.admit(reqs[i % 1000]), answers[i % 10], inputs[i % 5000], defense);
  };
  await run(5000, 0);
  const started = process.cpuUsage();
  await run(requests, 5000);
  const used = process.cpuUsage(started);
  const micros = (used.user + used.system) / requests;
  await gate.close();
  return micros;
}

const MODES: [string, Partial<ClientsOptions>][] = [
  ['per-client only', {}],
  ['+ cohorts (ip)', { cohort: 'ip' }],
  ['+ population', { population: {} }],
  ['+ fingerprints', { fingerprints: {} }],
  ['+ all three', { cohort: 'ip', population: {}, fingerprints: {} }],
];
console.log(
  `gate-above: ${requests} requests per mode (1000 keys, one 784-value row each), in process, CPU µs per request, best of ${rounds} rounds, node ${process.version}`,
);
await perRequest({}); // warm-up
const best = new Map<string, number>();
for (let round = 0; round < rounds; round++)
  for (const [label, extra] of MODES) best.set(label, Math.min(best.get(label) ?? Infinity, await perRequest(extra)));
const base = best.get(MODES[0][0])!;
for (const [label] of MODES) {
  const micros = best.get(label)!;
  console.log(`${label.padEnd(18)} ${micros.toFixed(1).padStart(6)} µs/request${label === MODES[0][0] ? '' : `  (+${(micros - base).toFixed(1)})`}`);
}
