/**
 * Rows per second of every defense at K = 10, 100 and 1000 (B = 1024 rows a batch), the
 * surrogate's forward pass excluded (its softmax is given). The baseline is `none` (validation
 * and copies only), measured in the same process; the ratio says what each defense's math adds.
 *
 *   npm run bench -- defenses [--k 10,100,1000] [--batch 1024] [--seconds 1]
 */
import { parseDefense, type DefenseContext } from '../../src/defenses/index.js';
import { randomBatch } from '../../test/helpers/random-batches.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const ks = (args.get('k') ?? '10,100,1000').split(',').map(Number);
const batchRows = Number(args.get('batch') ?? 1024);
const seconds = Number(args.get('seconds') ?? 1);

const SPECS = [
  'none',
  'topk:k=3',
  'rounding:decimals=3',
  'argmax',
  'noise:scale=0.5',
  'reverse-sigmoid:beta=0.7,gamma=0.2',
  'misinformation:tau=0.9,nu=1000',
  'mad:eps=0.5',
  'mad:eps=0.5,norm=l2',
  'mad:eps=0.5,norm=kl',
  'mad-argmax:eps=0.5',
  'mad:eps=0.5,jacobian=full',
  'mad-argmax:eps=0.5,jacobian=full',
  'modelguard-w:eps=0.5',
  'modelguard-s:eps=0.5',
  'grad2:eps=0.5',
  'grad2:eps=0.5,norm=l2',
  'grad2:eps=0.5,jacobian=full',
];

/** Microseconds per row: repeat whole batches until `seconds` have passed (after one warm-up batch). */
function measure(apply: () => void): number {
  apply();
  let batches = 0;
  const start = process.hrtime.bigint();
  const budget = BigInt(Math.round(seconds * 1e9));
  let elapsed = 0n;
  while (elapsed < budget || batches < 2) {
    apply();
    batches++;
    elapsed = process.hrtime.bigint() - start;
  }
  return Number(elapsed) / 1e3 / (batches * batchRows);
}

console.log(`defense throughput, B = ${batchRows} rows a batch, ${seconds}s per figure, node ${process.version}`);
for (const k of ks) {
  const batch = randomBatch(1, batchRows, k, 4);
  const gram = new Float64Array(batchRows * k * k);
  // Gram matrices of the last layer's closed form: a realistic positive semi-definite input.
  const surrogate = randomBatch(2, batchRows, k, 1);
  for (let r = 0; r < batchRows; r++) {
    const p = surrogate.data.subarray(r * k, (r + 1) * k);
    let pp = 0;
    for (let i = 0; i < k; i++) pp += p[i] * p[i];
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) gram[r * k * k + i * k + j] = pp - p[i] - p[j] + (i === j ? 1 : 0);
  }
  const ctx: DefenseContext = {
    surrogateProbs: surrogate,
    misinformationProbs: randomBatch(3, batchRows, k, 4),
    inputKeys: Array.from({ length: batchRows }, (_, r) => `input-${r}`),
    gram,
  };
  let baseline = 0;
  console.log(`\nK = ${k}`);
  console.log(`${'defense'.padEnd(36)} ${'µs/row'.padStart(10)} ${'rows/s'.padStart(12)} ${'× none'.padStart(8)}`);
  for (const spec of SPECS) {
    if (k > 100 && spec.includes('jacobian=full')) continue; // B×K×K Gram input: 8 GB at K = 1000
    const defense = parseDefense(spec, { noiseSecret: 'bench' });
    const perRow = measure(() => defense.apply(batch, ctx));
    if (spec === 'none') baseline = perRow;
    console.log(
      `${spec.padEnd(36)} ${perRow.toFixed(3).padStart(10)} ${Math.round(1e6 / perRow)
        .toLocaleString('en-US')
        .padStart(12)} ${(perRow / baseline).toFixed(1).padStart(8)}`,
    );
  }
}
