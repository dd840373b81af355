/**
 * `msd eval --detection`: the victim of the config (trained with its checkpoints, or loaded from the
 * cache), its world's attacker pool, the attackers (Knockoff random and adaptive, JBDA, JB-self,
 * JB-top3) and benign clients through
 * a detecting endpoint; writes detection.json and the report section.
 */
import { QUERY_POLICIES, type EvalConfig, type PolicyName } from '../config.js';
import { writeDetectionReport } from './detection-section.js';
import { runDetectionEvaluation, type DetectionReport } from './run.js';
import { withDetectionWorld, type DetectionEvaluationOptions, type ReportFiles } from './setup.js';
import { attackStream, type AttackerStream } from './streams.js';

export interface EvaluateDetectionOptions extends DetectionEvaluationOptions {
  /** Queries per attacker (default 1000). */
  attackerQueries?: number;
  /** The attackers (default: Knockoff random and adaptive, jbda, jbself, jbtop3; the defense-aware families need a defense, not a detector). */
  policies?: readonly PolicyName[];
  /** More attackers' streams (e.g. JBDA), beside the Knockoff ones. */
  extraStreams?: (context: { config: EvalConfig }) => AttackerStream[];
}

export function evaluateDetection(options: EvaluateDetectionOptions): Promise<{ report: DetectionReport; files: ReportFiles }> {
  const { config } = options;
  return withDetectionWorld(
    options,
    ({ world, test }, shared) => {
      const budget = options.attackerQueries ?? 1000;
      // Every attacker of the evaluation, whatever the config's grid runs.
      const streams = (options.policies ?? QUERY_POLICIES).map((policy) => attackStream(policy, world, config, budget, test));
      streams.push(...(options.extraStreams?.({ config }) ?? []));
      return runDetectionEvaluation({ ...shared, streams });
    },
    writeDetectionReport,
  );
}
