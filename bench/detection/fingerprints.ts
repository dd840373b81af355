/**
 * Query fingerprints (src/detection/above/fingerprint.ts) on real images: microseconds per 784-pixel row,
 * how often distinct benign images match another one (the false matches a store of benign traffic
 * would see), and how often an image matches its perturbation by ±λ per pixel (random signs, clipped
 * to [0, 1]; an adversarial search's steps are λ ≈ 0.01–0.03, a Jacobian augmentation's λ = 0.1).
 * Matching is pairwise per earlier query, as the fingerprint store counts it.
 *
 *   npm run bench -- fingerprints [--rows 3000] [--options '{"window":24,"levels":5}']
 */
import { fingerprintRows, resolveFingerprintOptions, sharedHashes } from '../../src/detection/above/fingerprint.js';
import { loadDataset } from '../../src/eval/world/datasets.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const rows = Number(args.get('rows') ?? 3000);
const config = resolveFingerprintOptions(JSON.parse(args.get('options') ?? '{}'));
const k = config.hashes;

console.log(`fingerprints: ${JSON.stringify(config)}, ${rows} test images per dataset, node ${process.version}`);
for (const name of ['mnist', 'fashion-mnist'] as const) {
  const data = await loadDataset(name);
  const x = data.test.x.subarray(0, rows * 784);
  // Once to warm up, then timed one row at a time (as the serving layer calls it).
  const prints = fingerprintRows(config, rows, 784, x);
  const started = performance.now();
  for (let r = 0; r < rows; r++) fingerprintRows(config, 1, 784, x.subarray(r * 784, (r + 1) * 784));
  const micros = ((performance.now() - started) * 1000) / rows;
  const index = new Map<number, number[]>();
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < k; j++) {
      const h = prints[r * k + j];
      if (!h) continue;
      let list = index.get(h);
      if (!list) index.set(h, (list = []));
      list.push(r);
    }
  }
  let matched = 0;
  for (let r = 0; r < rows; r++) {
    const counts = new Map<number, number>();
    let best = 0;
    for (let j = 0; j < k; j++) {
      const h = prints[r * k + j];
      if (!h) continue;
      for (const other of index.get(h)!) {
        if (other === r) continue;
        const c = (counts.get(other) ?? 0) + 1;
        counts.set(other, c);
        best = Math.max(best, c);
      }
    }
    if (best >= config.matchThreshold) matched++;
  }
  const perturbed = [0.01, 0.03, 0.05, 0.1].map((lambda) => {
    let seed = 1;
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const y = Float32Array.from(x, (v) => Math.min(1, Math.max(0, v + (random() < 0.5 ? -lambda : lambda))));
    const other = fingerprintRows(config, rows, 784, y);
    let hits = 0;
    for (let r = 0; r < rows; r++) if (sharedHashes(prints.subarray(r * k, (r + 1) * k), other.subarray(r * k, (r + 1) * k)) >= config.matchThreshold) hits++;
    return `±${lambda}: ${((100 * hits) / rows).toFixed(1)}%`;
  });
  console.log(
    `${name.padEnd(14)} ${micros.toFixed(1)} µs/row; distinct images matching another: ${((100 * matched) / rows).toFixed(2)}%; matching their perturbation ${perturbed.join(', ')}`,
  );
}
