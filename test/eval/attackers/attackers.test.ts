/**
 * The attackers that know or work around the defense, each on a toy task (8×8 synthetic images, 4
 * classes, a small MLP victim answering through a defense in process): each learns, and each beats
 * the plain attacker where it should.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseDefense, type ProbBatch } from '../../../src/defenses/index.js';
import { AttackerConfigError, attackerApplies, inversionNote, inverterFor, runAttack } from '../../../src/eval/attackers/index.js';
import { ReverseSigmoidInverse, reverseSigmoidMap } from '../../../src/eval/attackers/inversion.js';
import { restorerInput } from '../../../src/eval/attackers/restorer.js';
import { augmentImage, guessImageShape } from '../../../src/eval/attackers/smoothing.js';
import { top1Labels, trainingTargets } from '../../../src/eval/attackers/top1.js';
import type { AttackResult } from '../../../src/eval/attackers/types.js';
import { seededRandom } from '../../../src/eval/random.js';
import { tf } from '../../../src/models/index.js';
import { TOY_CLASSES, TOY_FEATURES, toyAttack, toyVictim, type ToyVictim } from '../helpers/toy-victim.js';

const best = (result: AttackResult) => Math.max(...result.outcomes.map((o) => o.accuracy));
const describeResult = (result: AttackResult) =>
  `${result.outcomes.map((o) => `${o.labels} ${(o.accuracy * 100).toFixed(1)}%`).join(', ')}; top-1 changed ${result.quality?.rawTop1Changed.toFixed(3)} → ${result.quality?.usedTop1Changed.toFixed(3)}`;

/** Softmax rows with a margin on one class: the victim's usual confident answers. */
function confidentRows(rows: number, classes: number, margin: number, seed: number): ProbBatch {
  const random = seededRandom(seed);
  const data = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) {
    const logits = Array.from(
      { length: classes },
      (_, c) => (c === r % classes ? margin : 0) + 1.5 * Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random()),
    );
    const max = Math.max(...logits);
    const exp = logits.map((l) => Math.exp(l - max));
    const total = exp.reduce((a, b) => a + b, 0);
    exp.forEach((e, c) => (data[r * classes + c] = e / total));
  }
  return { rows, cols: classes, data };
}

function meanL1(a: ProbBatch, b: ProbBatch): number {
  let total = 0;
  for (let i = 0; i < a.data.length; i++) total += Math.abs(a.data[i] - b.data[i]);
  return total / a.rows;
}

describe('inversion: the closed-form inverse of reverse sigmoid', () => {
  it('recovers confident rows within a small L1 (β = 0.5 and β = 2, γ = 0.2); MAD, noise and rounding have no inverse', () => {
    for (const beta of [0.5, 2]) {
      const rows = confidentRows(400, 10, 12, 3);
      const defended = parseDefense(`reverse-sigmoid:beta=${beta},gamma=0.2`).apply(rows);
      const inverter = inverterFor(`reverse-sigmoid:beta=${beta},gamma=0.2`)!;
      assert.ok(meanL1(defended, rows) > 1.3, `the defense moved the rows (${meanL1(defended, rows)})`);
      const inverted = inverter.invert(defended);
      assert.ok(meanL1(inverted, rows) < 0.03, `β = ${beta}: inverted L1 ${meanL1(inverted, rows)}`);
      const [a, b] = [top1Labels(inverted), top1Labels(rows)];
      assert.ok(a.filter((label, i) => label === b[i]).length >= 0.98 * rows.rows, `β = ${beta}: top-1 recovered`);
    }
    for (const spec of ['mad:eps=0.5', 'noise:scale=1', 'rounding:decimals=1', 'topk:k=3', 'argmax', 'none', 'reverse-sigmoid:beta=0.5|rounding:decimals=2']) {
      assert.equal(inverterFor(spec), undefined, spec);
      assert.equal(attackerApplies('inversion', spec), false, spec);
    }
    assert.match(inversionNote('rounding:decimals=2'), /nothing to invert; the answers are used as they are/);
    assert.match(inversionNote('mad:eps=0.5'), /no closed form/);
    assert.match(inversionNote('reverse-sigmoid:beta=0.5,gamma=0.2'), /inverted per entry/);
  });

  it('is not monotone: g has three pieces for γ < 1, so unsure rows are ambiguous (what the report measures)', () => {
    const inverse = new ReverseSigmoidInverse(0.5, 0.2);
    assert.deepEqual(
      inverse.pieces.map((p) => p.increasing),
      [false, true, false],
    );
    // g(1 − y) = 1 − g(y), and the turning point y* where g' = 0 sits near 0.022 for β = 0.5, γ = 0.2.
    assert.ok(Math.abs(reverseSigmoidMap(0.9, 0.5, 0.2) - (1 - reverseSigmoidMap(0.1, 0.5, 0.2))) < 1e-12);
    const turn = inverse.preimage(inverse.pieces[1], inverse.pieces[1].low);
    assert.ok(turn > 0.015 && turn < 0.03, `y* ${turn}`);
    // Two different rows with the same answer: a small entry on either side of y*.
    const v = reverseSigmoidMap(0.005, 0.5, 0.2);
    const other = inverse.preimage(inverse.pieces[1], v);
    assert.ok(other > 0.03 && Math.abs(reverseSigmoidMap(other, 0.5, 0.2) - v) < 1e-6, `second preimage ${other}`);
  });
});

describe('top-1: the knockoff on the answers’ top-1 labels', () => {
  it('trains on the argmax, which a top-1-keeping defense leaves as the undefended labels', () => {
    const rows = confidentRows(50, 10, 3, 9);
    const x = new Float32Array(50);
    assert.deepEqual(trainingTargets(x, rows, 'argmax').labels, top1Labels(rows));
    assert.equal(trainingTargets(x, rows, 'soft').targets, rows.data);
    for (const spec of ['mad:eps=1,oracle=argmax', 'modelguard-w:eps=1', 'topk:k=2', 'argmax']) {
      let defense: ReturnType<typeof parseDefense> | undefined;
      try {
        defense = parseDefense(spec);
      } catch {
        continue; // a defense another change has not registered yet
      }
      const p = confidentRows(50, 10, 0, 11);
      const defended = defense.apply(rows, { surrogateProbs: p });
      assert.deepEqual(top1Labels(defended), top1Labels(rows), spec);
    }
  });
});

describe('attackers on a toy victim', () => {
  let victim: ToyVictim;
  let tensorsBefore = 0;
  before(async () => {
    victim = await toyVictim();
    tensorsBefore = tf.memory().numTensors;
  });
  after(() => {
    assert.equal(tf.memory().numTensors, tensorsBefore, 'the attackers freed their tensors');
    victim.dispose();
  });

  it('smoothing beats the plain attacker against keyed noise: fresh noise per copy, averaged away', async () => {
    // The attacker holds 150 images. Keyed noise answers the same image the same way, so the plain
    // attacker gets one noisy answer per image; the smoothing attacker sends 5 copies of each (pixel
    // noise only: the toy images are not spatially smooth) and averages 5 independent draws.
    const spec = 'noise:scale=8';
    const base = toyAttack(victim, { budget: 150 });
    const pool = { ...base.pool, rows: 150, x: base.pool.x.subarray(0, 150 * TOY_FEATURES) };
    const repeat = victim.client(spec);
    const once = await repeat.infer(pool.x.subarray(0, TOY_FEATURES), 1, TOY_FEATURES);
    const twice = await repeat.infer(pool.x.subarray(0, TOY_FEATURES), 1, TOY_FEATURES);
    assert.deepEqual(once.data, twice.data, 'keyed noise: the same image gets the same answer');
    const plainClient = victim.client(spec);
    const plain = await runAttack({ ...base, pool, policy: 'random', client: plainClient });
    const smoothingClient = victim.client(spec);
    const smoothing = await runAttack({
      ...base,
      pool,
      budget: 750,
      policy: 'smoothing',
      smoothing: { copies: 5, shift: 0, noise: 0.03, flip: false },
      flip: false,
      client: smoothingClient,
    });
    assert.equal(plainClient.rows, 150);
    assert.equal(smoothing.queries, 750);
    assert.equal(smoothingClient.rows, 750, 'every copy is a query');
    assert.equal(smoothing.transfer.answers.rows, 150);
    assert.ok(plain.quality!.rawTop1Changed > 0.3, `the noise flips labels: ${describeResult(plain)}`);
    assert.ok(smoothing.quality!.usedTop1Changed < plain.quality!.rawTop1Changed / 2, `averaging restores labels: ${describeResult(smoothing)}`);
    assert.ok(best(smoothing) > best(plain) + 0.08, `smoothing ${describeResult(smoothing)} against plain ${describeResult(plain)}`);
  });

  it('the restorer, knowing reverse sigmoid and its parameters, beats the plain attacker; its held-out L1 drops', async () => {
    // β = 2: the confident victim's top class gets the smallest answer, so the plain and top-1
    // attackers learn the wrong labels; the restorer learns the inverse from its own shadow.
    const spec = 'reverse-sigmoid:beta=2,gamma=0.2';
    const base = toyAttack(victim, { budget: 400 });
    const known = { spec, surrogateArch: 'mlp' as const, misinformation: base.knockoff };
    const restorerSettings = { ...base.restorer, shadowFraction: 0.3, pairs: 4000, epochs: 30, shadowEpochs: 20 };
    const plain = await runAttack({ ...base, policy: 'random', client: victim.client(spec) });
    const client = victim.client(spec);
    const restored = await runAttack({ ...base, policy: 'restorer', known, restorer: restorerSettings, client });
    assert.equal(client.rows, 400, 'the shadow’s queries are part of the budget');
    assert.equal(restored.restorer!.shadowQueries, 120);
    assert.ok(
      restored.restorer!.restoredL1 < restored.restorer!.defendedL1 * 0.7,
      `held-out shadow L1 ${restored.restorer!.defendedL1} → ${restored.restorer!.restoredL1}`,
    );
    assert.ok(best(plain) < 0.4, `plain ${describeResult(plain)}`);
    assert.ok(best(restored) > best(plain) + 0.4, `restorer ${describeResult(restored)} against plain ${describeResult(plain)}`);
    assert.ok(restored.quality!.usedTop1Changed < 0.25, describeResult(restored));
  });

  it('the inversion attacker undoes reverse sigmoid exactly on the confident toy victim', async () => {
    const spec = 'reverse-sigmoid:beta=2,gamma=0.2';
    const base = toyAttack(victim, { budget: 300 });
    const known = { spec, surrogateArch: 'mlp' as const, misinformation: base.knockoff };
    const plain = await runAttack({ ...base, policy: 'random', client: victim.client(spec) });
    const inverted = await runAttack({ ...base, policy: 'inversion', known, client: victim.client(spec) });
    assert.ok(inverted.quality!.usedL1 < 0.02, `inverted answers L1 ${inverted.quality!.usedL1} (received ${inverted.quality!.rawL1})`);
    assert.ok(best(inverted) > best(plain) + 0.5, `inversion ${describeResult(inverted)} against plain ${describeResult(plain)}`);
  });

  it('the restorer in front of JB-top3: built from the first part of the budget, then every answer restored', async () => {
    const spec = 'reverse-sigmoid:beta=2,gamma=0.2';
    const base = toyAttack(victim, { budget: 400 });
    const known = { spec, surrogateArch: 'mlp' as const, misinformation: base.knockoff };
    const restorerSettings = { ...base.restorer, shadowFraction: 0.3, pairs: 4000, epochs: 30, shadowEpochs: 20 };
    const plainClient = victim.client(spec);
    const plain = await runAttack({ ...base, policy: 'jbtop3', client: plainClient });
    const client = victim.client(spec);
    const restored = await runAttack({ ...base, policy: 'restorer-jbtop3', known, restorer: restorerSettings, client });
    assert.equal(client.rows, 400);
    assert.equal(plainClient.rows, 400);
    assert.ok(
      restored.restorer!.shadowQueries >= 120 && restored.restorer!.shadowQueries < 400,
      `restorer built after ${restored.restorer!.shadowQueries} answers`,
    );
    assert.ok(restored.quality!.usedTop1Changed < restored.quality!.rawTop1Changed / 2, describeResult(restored));
    assert.ok(best(restored) > best(plain) + 0.3, `restorer-jbtop3 ${describeResult(restored)} against jbtop3 ${describeResult(plain)}`);
  });

  it('the restorer and inversion need the defense; inversion needs one with a closed form', async () => {
    const base = toyAttack(victim, { budget: 50 });
    await assert.rejects(
      runAttack({ ...base, policy: 'restorer', client: victim.client('none') }),
      (e: unknown) => e instanceof AttackerConfigError && /--target-defense/.test((e as Error).message),
    );
    await assert.rejects(
      runAttack({
        ...base,
        policy: 'inversion',
        known: { spec: 'mad:eps=0.5', surrogateArch: 'mlp', misinformation: base.knockoff },
        client: victim.client('none'),
      }),
      (e: unknown) => e instanceof AttackerConfigError && /closed-form inverse/.test((e as Error).message),
    );
  });
});

describe('smoothing copies and the restorer input', () => {
  it('shifts bring zeros in, flips only when allowed, pixels stay on the 1/255 grid', () => {
    assert.deepEqual(guessImageShape(784), [28, 28, 1]);
    assert.equal(guessImageShape(100 * 3), undefined);
    const image = new Float32Array(16);
    image[5] = 1; // row 1, column 1 of a 4×4 image
    const out = new Float32Array(16);
    // A random source that asks for a shift of (+1, +1) and (when asked) a flip.
    const sequence = (values: number[]) => {
      let i = 0;
      return () => values[i++ % values.length];
    };
    augmentImage(image, out, [4, 4, 1], { shift: 1, noise: 0 }, false, sequence([0.99, 0.99]));
    assert.equal(out[10], 1, 'moved to row 2, column 2');
    assert.equal(
      out.reduce((a, b) => a + b, 0),
      1,
    );
    augmentImage(image, out, [4, 4, 1], { shift: 0, noise: 0 }, true, sequence([0.5, 0.5, 0.1]));
    assert.equal(out[6], 1, 'flipped: row 1, column 2');
    augmentImage(image, out, [4, 4, 1], { shift: 0, noise: 0.05 }, false, seededRandom(4));
    for (const v of out) assert.ok(Math.abs(Math.round(v * 255) - v * 255) < 1e-4, String(v));
    assert.ok(out.some((v, i) => v !== image[i]));
  });

  it('the restorer reads answers as centred log-probabilities, floored at 1e-6', () => {
    const input = restorerInput(Float32Array.from([0.5, 0.5, 0, 0, 0.25, 0.75, 0, 0]), 2, 4);
    assert.ok(Math.abs(input[0] - input[1]) < 1e-6);
    assert.ok(Math.abs(input[0] + input[1] + input[2] + input[3]) < 1e-5);
    assert.ok(Math.abs(input[0] - input[2] - Math.log(0.5 / 1e-6)) < 1e-4);
    assert.equal(TOY_CLASSES, 4);
  });
});
