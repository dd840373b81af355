/**
 * Attackers' query streams for the detection evaluation. A stream queries through the client it is
 * given (one client id per attacker) and returns what it sent and got back; the evaluation then
 * trains a knockoff on those answers. Knockoff (random, adaptive) is built in; other attackers
 * (e.g. JBDA) plug in by implementing AttackerStream.
 */
import { isJbdaVariant, runAttack, type TransferSet, type VictimTestSet } from '../attackers/index.js';
import type { EvalConfig, PolicyName } from '../config.js';
import type { InferenceClient } from '../endpoint/kserve-client.js';
import type { EvaluationWorld } from '../world/world.js';

export interface AttackerStream {
  /** Shown in the report, e.g. "knockoff-random". */
  name: string;
  /** Family of the targets: knockoff attackers within 200 queries, jbda within 500. */
  family: 'knockoff' | 'jbda' | 'other';
  /** Queries through `client` until done; `requestRows` rows per request at most. */
  run(client: InferenceClient, requestRows: number): Promise<TransferSet>;
}

/**
 * The evaluation's attackers as streams: Knockoff (random, adaptive) from the attacker's pool, and
 * the Jacobian-based ones (jbda, jbself, jbtop3) from a seed set of the victim's training images.
 */
export function attackStream(policy: PolicyName, world: EvaluationWorld, config: EvalConfig, budget: number, test: VictimTestSet): AttackerStream {
  const jbda = isJbdaVariant(policy);
  return {
    name: jbda ? policy : `knockoff-${policy}`,
    family: jbda ? 'jbda' : 'knockoff',
    async run(client, requestRows) {
      const result = await runAttack({
        pool: world.pool,
        client,
        policy,
        budget: jbda ? budget : Math.min(budget, world.pool.rows),
        requestRows,
        classes: world.classes,
        inputShape: [world.features],
        knockoff: config.knockoffTraining,
        adaptive: config.adaptive,
        labels: [],
        test,
        seed: config.seed,
        jbda: config.jbda,
        seedImages: world.victimTrain,
        smoothing: config.smoothing,
        restorer: config.restorer,
      });
      return result.transfer;
    },
  };
}
