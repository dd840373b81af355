/**
 * The surrogate's cost for MAD, MNIST MLP (784-256-128-10, randomly initialised), per backend:
 * - Gram matrices per second (full-Jacobian MAD), closed-form dense method and autodiff method,
 *   next to the surrogate's plain forward pass (last-layer MAD's only model work) as the baseline;
 * - MAD end to end per row: context (forward or Gram) plus the defense's oracle, for
 *   `mad` (last layer) and `mad:jacobian=full`, extreme and argmax oracles.
 *
 *   npm run bench -- models-gram [--backends wasm,cpu] [--rows 512] [--chunk 128]
 */
import { parseDefense } from '../../src/defenses/index.js';
import { loadDataset } from '../../src/eval/world/datasets.js';
import { Surrogate, computeDefenseContext, createModel, initBackend, predictProbs, tf, type BackendName, type GramMethod } from '../../src/models/index.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const backends = (args.get('backends') ?? 'wasm,cpu').split(',') as BackendName[];
const rows = Number(args.get('rows') ?? 512);
const chunk = Number(args.get('chunk') ?? 128);

/** Rows per second of `work` over `rows` rows, after one warm-up call; repeats until 1 s has passed. */
function rate(work: () => void): number {
  work();
  let calls = 0;
  const start = performance.now();
  while (performance.now() - start < 1000 || calls < 2) {
    work();
    calls++;
  }
  return (calls * rows) / ((performance.now() - start) / 1000);
}

delete process.env.MSD_BACKEND;
const data = await loadDataset('mnist', { limit: { train: 0, test: rows } });
const x = data.test.x;
for (const backend of backends) {
  const info = await initBackend({ prefer: backend, log: () => {} });
  if (info.name !== backend) {
    console.log(`${backend}: unavailable`);
    continue;
  }
  const model = createModel({ arch: 'mlp', inputShape: [784], classes: 10, seed: 7 });
  const victim = createModel({ arch: 'mlp', inputShape: [784], classes: 10, seed: 8 });
  const victimProbs = { rows, cols: 10, data: predictProbs(victim, x, rows) };
  victim.dispose();
  const before = tf.memory().numTensors;
  const forward = rate(() => predictProbs(model, x, rows));
  console.log(`${backend}: surrogate forward ${forward.toFixed(0)} rows/s (baseline)`);
  for (const method of ['dense', 'autodiff'] as GramMethod[]) {
    const surrogate = new Surrogate(model, { gramMethod: method, gramChunkRows: chunk });
    const grams = rate(() => surrogate.gram(x, rows));
    console.log(`${backend}: Gram matrices (${method}, chunk ${chunk}) ${grams.toFixed(0)}/s, ${(forward / grams).toFixed(1)}× the forward's cost`);
  }
  const surrogate = new Surrogate(model, { gramChunkRows: chunk });
  for (const spec of ['mad:eps=0.5', 'mad-argmax:eps=0.5', 'mad:eps=0.5,jacobian=full', 'mad-argmax:eps=0.5,jacobian=full']) {
    const defense = parseDefense(spec);
    const perRow = 1e6 / rate(() => defense.apply(victimProbs, computeDefenseContext(defense.needs, x, rows, { surrogate })));
    const context = computeDefenseContext(defense.needs, x, rows, { surrogate });
    const oracleOnly = 1e6 / rate(() => defense.apply(victimProbs, context));
    console.log(`${backend}: ${spec.padEnd(34)} ${perRow.toFixed(1).padStart(7)} µs/row end to end (oracle ${oracleOnly.toFixed(1)} µs/row)`);
  }
  const leaked = tf.memory().numTensors - before;
  if (leaked !== 0) console.log(`${backend}: ${leaked} tensors leaked!`);
  model.dispose();
}
