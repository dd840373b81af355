/**
 * Which attacker families a defense setting is measured against. No tensors here: the run planner
 * (run/run-key.ts) asks this for every (setting, family) pair.
 */
import type { PolicyName } from '../config.js';
import { inverterFor } from './inversion.js';

/** The setting's spec without an ablation suffix (" @ surrogate=small"). */
export function baseSpec(spec: string): string {
  return spec.split(' @ ')[0].trim();
}

/**
 * Whether `policy` is run against the setting: the restorer families need a defense to undo (not
 * against `none`), the inversion attacker a closed-form inverse (reverse sigmoid); against anything
 * else it would be the Knockoff attacker again.
 */
export function attackerApplies(policy: PolicyName, spec: string): boolean {
  if (policy === 'restorer' || policy === 'restorer-jbtop3') return baseSpec(spec) !== 'none';
  if (policy === 'inversion') return inverterFor(spec) !== undefined;
  return true;
}

/** Why a family was not run against a setting (for logs), or undefined when it was. */
export function whyNotRun(policy: PolicyName, spec: string): string | undefined {
  if (attackerApplies(policy, spec)) return undefined;
  if (policy === 'inversion') return `${policy}: ${baseSpec(spec)} has no closed-form inverse (the answers as they are: the Knockoff attacker)`;
  return `${policy}: nothing to restore against ${baseSpec(spec)}`;
}

/**
 * The family whose seeds a family shares: smoothing, restorer and inversion query the random
 * policy's images in its order (and start their knockoffs from the same weights), restorer-jbtop3
 * follows JB-top3 until its restorer is in: each compares with its plain attacker pairwise.
 */
export function seedFamily(policy: PolicyName): PolicyName {
  if (policy === 'smoothing' || policy === 'restorer' || policy === 'inversion') return 'random';
  if (policy === 'restorer-jbtop3') return 'jbtop3';
  return policy;
}
