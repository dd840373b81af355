/**
 * The evaluation's query path: images per second the Knockoff attacker gets through the defended
 * endpoint (JSON over loopback HTTP, the real middleware, the defense and its context), per defense,
 * next to a baseline measured in the same process: the victim's forward pass alone, in-process.
 * The ratio says how much of a run's query phase is serving overhead rather than model compute.
 *
 *   npm run bench -- eval-queries [--rows 10000] [--request-rows 256] [--defenses none,rounding:decimals=1,mad:eps=0.5,mad-argmax:eps=1]
 */
import { parseDefense } from '../../src/defenses/index.js';
import { startDefendedEndpoint } from '../../src/eval/endpoint/defended-endpoint.js';
import { inferAll, kserveClient } from '../../src/eval/endpoint/kserve-client.js';
import { seededRandom } from '../../src/eval/random.js';
import { createModel, initBackend, predictProbs, Surrogate } from '../../src/models/index.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const rows = Number(args.get('rows') ?? 10000);
const requestRows = Number(args.get('request-rows') ?? 256);
const specs = (args.get('defenses') ?? 'none,rounding:decimals=1,mad:eps=0.5,mad-argmax:eps=1').split(',');
const features = 784;

const backend = await initBackend({ log: () => {} });
const random = seededRandom(1);
// 8-bit images, as the datasets hold them.
const x = Float32Array.from({ length: rows * features }, () => Math.round(255 * random() * random()) / 255);
const victim = createModel({ arch: 'mlp', inputShape: [features], classes: 10, seed: 1 });
const surrogate = Surrogate.random({ arch: 'mlp', inputShape: [features], classes: 10, seed: 2 });

predictProbs(victim, x.subarray(0, 1024 * features), 1024);
let start = performance.now();
predictProbs(victim, x, rows);
const baseline = rows / ((performance.now() - start) / 1000);
console.log(`backend ${backend.name}; ${rows} images, ${requestRows} per request`);
console.log(`baseline: victim forward in-process      ${baseline.toFixed(0).padStart(8)} images/s`);

for (const spec of specs) {
  const defense = parseDefense(spec, { noiseSecret: 'bench' });
  const endpoint = await startDefendedEndpoint({ victim, defense, providers: { surrogate } });
  try {
    const client = kserveClient(endpoint.url);
    await inferAll(client, x.subarray(0, requestRows * features), requestRows, features, requestRows);
    start = performance.now();
    await inferAll(client, x, rows, features, requestRows);
    const rate = rows / ((performance.now() - start) / 1000);
    console.log(
      `${`through the endpoint, ${spec}`.padEnd(40)} ${rate.toFixed(0).padStart(8)} images/s  (${(rate / baseline).toFixed(2)}× the in-process forward)`,
    );
  } finally {
    await endpoint.close();
  }
}
victim.dispose();
surrogate.dispose();
