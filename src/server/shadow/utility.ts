/**
 * Utility on the held-out set, measured once when the model's answers there are known: the model's
 * own accuracy, and the accuracy of each tier's defended answers (its defense applied to them).
 */
import type { Logger } from 'pino';
import type { Defense, ProbBatch } from '../../defenses/index.js';
import type { ContextProvider } from '../perturber.js';
import type { InputRows } from '../protocols/index.js';
import type { ShadowMetrics } from './metrics.js';
import type { ResolvedShadow } from './options.js';
import { share, top1Of } from './scores.js';

type HeldOut = ResolvedShadow['heldOut'];

export interface UtilityDeps {
  metrics: ShadowMetrics;
  logger?: Logger;
  /** Tiers measured: the others' defenses are left out. */
  tierLabels: ReadonlySet<string>;
  defenses?: ReadonlyMap<string, Defense>;
  context?: ContextProvider;
}

/** Rows the defense answers at a time. */
const CHUNK_ROWS = 256;

/** Sets the model's accuracy and each tier's defended accuracy on the held-out set; a tier that fails is logged and left out. */
export async function measureUtility(heldOut: HeldOut, answers: Float32Array, deps: UtilityDeps): Promise<void> {
  const { metrics, logger } = deps;
  const cols = answers.length / heldOut.rows;
  metrics.modelAccuracy().set(share(top1Of(answers, heldOut.rows, cols), heldOut.labels));
  for (const [tier, defense] of deps.defenses ?? []) {
    if (!deps.tierLabels.has(tier)) continue;
    try {
      metrics.defendedAccuracy.set({ tier }, await defendedAccuracy(heldOut, answers, cols, defense, deps.context));
    } catch (error) {
      logger?.warn({ tier, error: (error as Error).message }, 'shadow: the defended accuracy on the held-out set could not be measured');
    }
  }
}

/** The share of held-out rows whose defended answer's top-1 is the label (the defense applied chunk by chunk). */
async function defendedAccuracy(heldOut: HeldOut, answers: Float32Array, cols: number, defense: Defense, context?: ContextProvider): Promise<number> {
  let right = 0;
  for (let start = 0; start < heldOut.rows; start += CHUNK_ROWS) {
    const rows = Math.min(CHUNK_ROWS, heldOut.rows - start);
    const batch: ProbBatch = { rows, cols, data: answers.subarray(start * cols, (start + rows) * cols) };
    const inputs: InputRows = { rows, cols: heldOut.features, data: heldOut.x.subarray(start * heldOut.features, (start + rows) * heldOut.features) };
    const needed = defense.needs.length > 0 && context ? await context(defense.needs, inputs) : {};
    const defended = defense.apply(batch, needed);
    const top = top1Of(defended.data, rows, cols);
    for (let r = 0; r < rows; r++) if (top[r] === heldOut.labels[start + r]) right++;
    // One chunk at a time: live requests share the surrogate.
    await new Promise((resolve) => setImmediate(resolve));
  }
  return right / heldOut.rows;
}
