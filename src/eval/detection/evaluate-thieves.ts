/**
 * `msd eval --detection --thieves SPECS`: the config's victim (trained with its checkpoints, or
 * loaded from the cache) and attacker pool, and thieves with many identities (sybil.ts) against
 * detection above the client (population-run.ts); writes population.json and the report section.
 */
import type { FingerprintServingOptions, PopulationServingOptions } from '../../server/clients/options.js';
import { runPopulationEvaluation, type PopulationReport } from './population-run.js';
import { writePopulationReport } from './population-section.js';
import { withDetectionWorld, type DetectionEvaluationOptions, type ReportFiles } from './setup.js';
import { attackStream } from './streams.js';
import type { ThiefScenario } from './sybil.js';

export interface EvaluateThievesOptions extends DetectionEvaluationOptions {
  scenarios: readonly ThiefScenario[];
  /** Queries per thief (default 10 000). */
  thiefQueries?: number;
  population?: PopulationServingOptions;
  fingerprints?: FingerprintServingOptions | false;
  spanMs?: number;
}

export function evaluateThieves(options: EvaluateThievesOptions): Promise<{ report: PopulationReport; files: ReportFiles }> {
  const thiefQueries = options.thiefQueries ?? 10_000;
  return withDetectionWorld(
    options,
    ({ world, test }, shared) =>
      runPopulationEvaluation({
        ...shared,
        cover: world.victimTrain,
        scenarios: options.scenarios,
        streamFor: (scenario) => attackStream(scenario.policy as Exclude<typeof scenario.policy, 'none'>, world, options.config, thiefQueries, test),
        thiefQueries,
        population: options.population,
        fingerprints: options.fingerprints,
        spanMs: options.spanMs,
      }),
    writePopulationReport,
  );
}
