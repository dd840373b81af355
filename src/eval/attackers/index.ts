/**
 * The attacker families, one module each, behind one entry: `runAttack` dispatches a run to its
 * family. The grid (run/session.ts), `msd eval --target` (target/external.ts) and the detection
 * streams call it.
 *
 * | family | module | queries | trains on |
 * |---|---|---|---|
 * | knockoff-random / knockoff-adaptive | knockoff.ts | pool images, random or bandit order | the answers |
 * | top-1 (labels `argmax` of any family) | top1.ts | the family's | the answers' top-1 labels |
 * | smoothing | smoothing.ts | m augmented copies per pool image | the average answer |
 * | restorer | restorer.ts | pool images (random) | answers restored by a network trained on a shadow |
 * | inversion | inversion.ts | pool images (random) | answers inverted in closed form (reverse sigmoid) |
 * | jbda / jbself / jbtop3 | jbda.ts | synthetic points near the substitute's boundaries | the answers |
 * | restorer-jbtop3 | jbda.ts + restorer.ts | JB-top3's | restored answers, from the first part of the budget on |
 */
import type { JbdaSettings, RestorerSettings, SmoothingSettings } from '../config.js';
import { deriveSeed } from '../random.js';
import type { LabelledImages } from '../world/world.js';
import { attackerApplies, baseSpec } from './applies.js';
import { isJbdaVariant, jbdaSeedSet, runJbdaAttack } from './jbda.js';
import { collectKnockoffTransfer, runKnockoffAttack, trainKnockoffs } from './knockoff.js';
import { answerQuality } from './quality.js';
import { buildRestorer, runRestorerAttack, shadowQueries, type KnownDefense } from './restorer.js';
import { runSmoothingAttack } from './smoothing.js';
import { inverterFor } from './inversion.js';
import type { AttackOptions, AttackResult } from './types.js';

export { attackerApplies, baseSpec, seedFamily, whyNotRun } from './applies.js';
export { inversionNote, inverterFor } from './inversion.js';
export type { KnownDefense } from './restorer.js';
export type { AttackOptions, AttackResult, TransferSet, TruthOracle, VictimTestSet } from './types.js';
export { isJbdaVariant } from './jbda.js';
export { trainKnockoff } from './knockoff.js';

export interface RunAttackOptions extends AttackOptions {
  jbda: JbdaSettings;
  /** Where the Jacobian-based attackers draw their seed set from (the victim's training images). */
  seedImages: LabelledImages;
  smoothing: SmoothingSettings;
  /** Smoothing: horizontal flips allowed (the caller resolves "auto" from the victim's domain). */
  flip?: boolean;
  /** Smoothing: [h, w, c] of one image (default: a square one-channel image). */
  imageShape?: readonly number[];
  restorer: RestorerSettings;
  /** The defense as the attacker knows it (restorer, inversion); required by those families. */
  known?: KnownDefense;
}

export class AttackerConfigError extends Error {
  override name = 'AttackerConfigError';
}

function requireKnown(options: RunAttackOptions): KnownDefense {
  if (!options.known) throw new AttackerConfigError(`the ${options.policy} attacker knows the defense (Kerckhoffs): give its spec (--target-defense SPEC)`);
  return options.known;
}

export async function runAttack(options: RunAttackOptions): Promise<AttackResult> {
  const { policy } = options;
  if (policy === 'random' || policy === 'adaptive') return runKnockoffAttack(options);
  if (policy === 'smoothing') return runSmoothingAttack({ ...options, flip: options.flip ?? options.smoothing.flip === true });
  if (policy === 'restorer') return runRestorerAttack({ ...options, known: requireKnown(options) });
  if (policy === 'inversion') {
    const known = requireKnown(options);
    const inverter = inverterFor(known.spec);
    if (!inverter || !attackerApplies(policy, known.spec))
      throw new AttackerConfigError(`the inversion attacker needs a defense with a closed-form inverse (reverse sigmoid), got "${baseSpec(known.spec)}"`);
    const collected = await collectKnockoffTransfer(options, 'random');
    const inverted = inverter.invert(collected.transfer.answers);
    const quality = answerQuality(options.truth, collected.transfer.x, collected.transfer.answers, inverted);
    const transfer = { ...collected.transfer, answers: inverted };
    const outcomes = await trainKnockoffs(transfer, options);
    return { ...collected, transfer, outcomes, ...(quality ? { quality } : {}) };
  }
  const seedSet = jbdaSeedSet(options.seedImages, options.jbda.seedSize, deriveSeed(options.seed, 'jbda-seed-set'));
  if (policy === 'restorer-jbtop3') {
    const known = requireKnown(options);
    const features = options.inputShape.reduce((a, b) => a * b, 1);
    return runJbdaAttack({
      ...options,
      variant: 'jbtop3',
      seedSet,
      settings: options.jbda,
      restoration: {
        after: shadowQueries(options.budget, options.restorer),
        // The attacker's own images are its JB points so far: the shadow answers on them.
        build: (set) =>
          buildRestorer({
            known,
            shadowSet: set,
            images: { x: set.x, rows: set.x.length / features },
            settings: options.restorer,
            knockoff: options.knockoff,
            inputShape: options.inputShape,
            classes: options.classes,
            seed: options.seed,
          }),
      },
    });
  }
  if (!isJbdaVariant(policy)) throw new AttackerConfigError(`unknown attacker family "${String(policy)}"`);
  return runJbdaAttack({ ...options, variant: policy, seedSet, settings: options.jbda });
}
