/**
 * The thief's side of the thieves' evaluation (population-run.ts): what it met along its run (the
 * query at which each detector first acted, the population alarms, the clean answers it still got
 * after the first action) and the knockoffs trained on what it received and on the same queries
 * answered undefended.
 */
import type { ClientGate } from '../../server/clients/index.js';
import type { LayersModel } from '../../models/index.js';
import { predictProbs } from '../../models/index.js';
import { trainKnockoff, type TransferSet, type VictimTestSet } from '../attackers/index.js';
import type { TrainingSettings } from '../config.js';
import { accuracy } from '../records/measures.js';
import { newRecord } from './recorder.js';
import { isRefusedRow, type ThiefScenario, type ThiefTally } from './sybil.js';

/** Pixels as the endpoint gets them: the client sends UINT8 (kserve-client), so the undefended answer is the one to the rounded image. */
export function asSent(x: Float32Array): Float32Array {
  return Float32Array.from(x, (v) => Math.max(0, Math.min(255, Math.round(v * 255))) / 255);
}

const VIEWS = ['all', 'young'] as const;

/** Follows the detection after each thief request: who acted first and when, the population alarms, the clean answers after the first action. */
export class ThiefObserver {
  readonly record = newRecord();
  readonly cohortRecord = newRecord();
  /** Per detector ("client:hoda", "cohort:ood", "population:young", ...): the thief's queries answered when it first acted. */
  readonly firstAction: Record<string, number> = {};
  readonly populationFlaggedBy: Record<string, string[]> = {};
  readonly alarmTimeline: [number, string, boolean][] = [];
  readonly cleanAfterAction = { noAlarm: 0, duringAlarm: 0 };
  private readonly alarmState: Record<string, boolean> = { all: false, young: false };
  private cleanSeen = 0;

  constructor(private readonly gate: Pick<ClientGate, 'populationStatus'>) {}

  note(tally: ThiefTally): void {
    const { firstAction } = this;
    const fresh = tally.clean - this.cleanSeen;
    this.cleanSeen = tally.clean;
    if (tally.cleanBeforeAction < tally.clean && fresh > 0) {
      const during = this.alarmState.all || this.alarmState.young;
      if (during) this.cleanAfterAction.duringAlarm += fresh;
      else this.cleanAfterAction.noAlarm += fresh;
    }
    for (const d of Object.keys(this.record.firstFlag)) firstAction[`client:${d}`] ??= tally.attack;
    if (this.record.firstAction !== undefined) firstAction['client:policy'] ??= tally.attack;
    for (const d of Object.keys(this.cohortRecord.firstFlag)) firstAction[`cohort:${d}`] ??= tally.attack;
    const status = this.gate.populationStatus();
    for (const view of VIEWS) {
      const on = status?.views[view].alarm === true;
      if (on !== this.alarmState[view] && this.alarmTimeline.length < 40) this.alarmTimeline.push([tally.attack, view, on]);
      this.alarmState[view] = on;
      if (!on || firstAction[`population:${view}`] !== undefined) continue;
      firstAction[`population:${view}`] = tally.attack;
      this.populationFlaggedBy[view] = status.views[view].verdicts.filter((v) => v.flagged).map((v) => v.detector);
    }
  }
}

/** What the thief actually got: its transfer set without the refused queries. */
export function receivedTransfer(done: TransferSet, classes: number, features: number): TransferSet {
  const kept: number[] = [];
  for (let r = 0; r < done.answers.rows; r++) if (!isRefusedRow(done.answers.data, r * classes, classes)) kept.push(r);
  if (kept.length === done.answers.rows) return done;
  return {
    x: Float32Array.from(kept.flatMap((r) => Array.from(done.x.subarray(r * features, (r + 1) * features)))),
    answers: {
      rows: kept.length,
      cols: classes,
      data: Float32Array.from(kept.flatMap((r) => Array.from(done.answers.data.subarray(r * classes, (r + 1) * classes)))),
    },
    indices: Int32Array.from(kept, (r) => done.indices[r]),
  };
}

/** The knockoffs of every scenario: on what the thief received, and on the same queries answered undefended. */
export class ThiefKnockoffs {
  // The undefended baseline depends only on the queries: the random Knockoff's are the same in every scenario.
  private readonly undefendedCache = new Map<string, number>();
  private readonly settings: { classes: number; inputShape: number[]; knockoff: TrainingSettings; test: VictimTestSet; seed: number };

  constructor(
    private readonly victim: LayersModel,
    private readonly classes: number,
    private readonly features: number,
    knockoff: TrainingSettings,
    private readonly test: VictimTestSet,
    seed: number,
  ) {
    this.settings = { classes, inputShape: [features], knockoff, test, seed };
  }

  async accuracies(scenario: ThiefScenario, done: TransferSet): Promise<{ undefended: number; withDetection: number }> {
    const { classes, settings, test } = this;
    const received = receivedTransfer(done, classes, this.features);
    const withDetection =
      received.answers.rows > 0 ? (await trainKnockoff(received, 'soft', settings)).accuracy : accuracy(new Int32Array(test.rows), test.labels);
    const cleanKey = scenario.policy === 'random' ? `random:${done.answers.rows}` : undefined;
    let undefended = cleanKey !== undefined ? this.undefendedCache.get(cleanKey) : undefined;
    if (undefended === undefined) {
      const clean = { ...done, answers: { rows: done.answers.rows, cols: classes, data: predictProbs(this.victim, asSent(done.x), done.answers.rows) } };
      undefended = (await trainKnockoff(clean, 'soft', settings)).accuracy;
      if (cleanKey !== undefined) this.undefendedCache.set(cleanKey, undefended);
    }
    return { undefended, withDetection };
  }
}
