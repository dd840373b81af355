/**
 * One run of the grid (a defense setting, a policy, a budget) and the key that identifies it.
 * The key covers everything that changes the run's outcome, so a store never confuses a finished
 * run with one under other settings, and a changed setting reruns instead of being skipped.
 */
import { createHash } from 'node:crypto';
import { attackerApplies } from '../attackers/applies.js';
import type { AttackerLabels, DefenseSetting, EvalConfig, PolicyName } from '../config.js';
import { stableJson } from '../stable-json.js';

export interface RunSpec {
  defense: DefenseSetting;
  policy: PolicyName;
  budget: number;
  /** Attacker seed index, 0..seeds−1 (the victim is the same for all). */
  attackerSeed: number;
}

/**
 * The runs of a config in the order they execute: defense by defense, then attacker family, budget
 * and attacker seed. A family that does not apply to a setting (the restorer against no defense,
 * inversion without a closed form) is left out: it would be the Knockoff attacker again.
 */
export function planRuns(config: EvalConfig): RunSpec[] {
  const seeds = Array.from({ length: config.seeds }, (_, i) => i);
  return config.defenses.flatMap((defense) =>
    config.policies
      .filter((policy) => attackerApplies(policy, defense.spec))
      .flatMap((policy) => config.budgets.flatMap((budget) => seeds.map((attackerSeed) => ({ defense, policy, budget, attackerSeed })))),
  );
}

const JACOBIAN_FAMILIES: readonly PolicyName[] = ['jbda', 'jbself', 'jbtop3', 'restorer-jbtop3'];

/** The settings that decide a run's outcome, in a fixed field order. */
export function runIdentity(config: EvalConfig, run: RunSpec): Record<string, unknown> {
  return {
    victim: config.victim,
    world: config.world,
    seed: config.seed,
    defense: run.defense.spec,
    policy: run.policy,
    budget: run.budget,
    // Left out for the first seed, so runs stored before seeds existed keep their keys.
    attackerSeed: run.attackerSeed > 0 ? run.attackerSeed : undefined,
    attackerLabels: [...config.attackerLabels].sort() as AttackerLabels[],
    victimTraining: config.victimTraining,
    knockoffTraining: config.knockoffTraining,
    surrogateArch: config.surrogateArch,
    misinformationTraining: run.defense.spec.includes('misinformation') ? config.misinformationTraining : undefined,
    adaptive: run.policy === 'adaptive' ? config.adaptive : undefined,
    jbda: JACOBIAN_FAMILIES.includes(run.policy) ? config.jbda : undefined,
    smoothing: run.policy === 'smoothing' ? config.smoothing : undefined,
    restorer: run.policy === 'restorer' || run.policy === 'restorer-jbtop3' ? config.restorer : undefined,
    closedWorldPool: config.world === 'closed' ? config.closedWorldPool : undefined,
    limits: config.limits,
  };
}

/** A short readable prefix plus a hash of the full identity, e.g. "mad-random-10000-3f9a…". */
export function runKey(config: EvalConfig, run: RunSpec): string {
  const hash = createHash('sha256')
    .update(stableJson(runIdentity(config, run)))
    .digest('hex')
    .slice(0, 16);
  const family = run.defense.family.replace(/[^\w-]+/g, '_');
  return `${family}-${run.policy}-${run.budget}${run.attackerSeed > 0 ? `-s${run.attackerSeed}` : ''}-${hash}`;
}
