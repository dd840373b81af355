/**
 * Dispatches one run to its attacker family: the Knockoff attacker for the `random` and `adaptive`
 * policies, the Jacobian-based attackers (jbda, jbself, jbtop3) otherwise. The latter start from a
 * seeded draw of the victim's training images (never its test set, which scores the knockoffs).
 */
import type { JbdaSettings } from './config.js';
import { isJbdaVariant, jbdaSeedSet, runJbdaAttack } from './jbda.js';
import { runKnockoffAttack, type AttackOptions, type AttackResult } from './knockoff.js';
import { deriveSeed } from './random.js';
import type { LabelledImages } from './world.js';

export interface RunAttackOptions extends AttackOptions {
  jbda: JbdaSettings;
  /** Where the Jacobian-based attackers draw their seed set from (the victim's training images). */
  seedImages: LabelledImages;
}

export function runAttack(options: RunAttackOptions): Promise<AttackResult> {
  const { policy, jbda, seedImages, ...common } = options;
  if (!isJbdaVariant(policy)) return runKnockoffAttack({ ...common, policy });
  const seedSet = jbdaSeedSet(seedImages, jbda.seedSize, deriveSeed(options.seed, 'jbda-seed-set'));
  return runJbdaAttack({ ...common, variant: policy, seedSet, settings: jbda });
}
