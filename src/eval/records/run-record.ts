/** What one finished run measured: the defender's side, the attacker's side, and its cost. */
import type { AttackerLabels, AttackerWorld, PolicyName, VictimDataset } from '../config.js';

/** The defended answers on the victim's test set, against the undefended ones. */
export interface DefenderOutcome {
  /** Top-1 accuracy of the defended answers. */
  accuracy: number;
  /** Undefended accuracy minus defended accuracy (points of accuracy as a fraction, 0.01 = 1 point). */
  accuracyLoss: number;
  l1Mean: number;
  l1Median: number;
  /** Fraction of answers whose top-1 class the defense changed. */
  top1ChangeRate: number;
}

export interface AttackerOutcome {
  labels: AttackerLabels;
  /** The knockoff's top-1 accuracy on the victim's test set. */
  accuracy: number;
  /** Fraction of test images where the knockoff's top-1 equals the undefended victim's. */
  agreement: number;
  /** Aggregated over attacker seeds (report only): 95% half-widths and the per-seed accuracies. */
  accuracyHalfWidth?: number;
  agreementHalfWidth?: number;
  accuracies?: number[];
}

/**
 * What the attacker trained on, against the clean (undefended) answers to the same queries:
 * measured by the evaluation, which owns the victim (the attacker never sees the clean answers).
 * `raw`: the answers as the endpoint gave them; `used`: after the family's processing (averaged
 * copies, restored, inverted; the same as raw for the plain families).
 */
export interface AnswerQuality {
  rows: number;
  /** Mean L1 distance to the clean answers. */
  rawL1: number;
  usedL1: number;
  /** Fraction of rows whose top-1 class differs from the clean answer's. */
  rawTop1Changed: number;
  usedTop1Changed: number;
}

/** The restorer's own accuracy: on held-out shadow queries, the attacker's estimate of how well it restores. */
export interface RestorerReport {
  /** Queries (of the run's budget) whose answers trained the shadow model. */
  shadowQueries: number;
  /** (defended, clean) pairs it trained on, and how many were held out. */
  pairs: number;
  heldOut: number;
  /** Mean L1 to the clean shadow answers on the held-out pairs: the defended ones, and the restored ones. */
  defendedL1: number;
  restoredL1: number;
}

export interface RunRecord {
  key: string;
  /** 'external': an endpoint this project did not start (`msd eval --target`). */
  victim: VictimDataset | 'external';
  world: AttackerWorld | 'external';
  seed: number;
  /** The defense family (a plot curve), its parameters and the full spec. */
  defense: string;
  params: string;
  spec: string;
  policy: PolicyName;
  /** The attacker family: knockoff-random, knockoff-adaptive, smoothing, restorer, inversion, jbda, jbself, jbtop3, restorer-jbtop3 (records written before it existed: from the policy). */
  attacker?: string;
  budget: number;
  /** Undefended victim accuracy on its test set. */
  victimAccuracy: number;
  defender: DefenderOutcome;
  attackers: AttackerOutcome[];
  /** Rows the attacker sent to the defended endpoint, and in how many HTTP requests. */
  queries: number;
  requests: number;
  /** Wall time of the run (queries, training, testing). */
  seconds: number;
  finishedAt: string;
  /** Which attacker seed of the setting this run used (0-based; absent: 0). */
  attackerSeed?: number;
  /** The attacker family and its knockoff's architecture (absent in records from before they were stored). */
  attackerFamily?: string;
  knockoffArch?: string;
  /** Adaptive policy: images drawn per coarse class of the attacker's pool. */
  policyPicks?: number[];
  /** The answers the attacker trained on against the clean ones (grid runs; absent for --target). */
  answerQuality?: AnswerQuality;
  /** Restorer families: the restorer's accuracy on its held-out shadow queries. */
  restorer?: RestorerReport;
  /** Report only: how many seeded runs this aggregated record stands for. */
  seeds?: number;
}

/** Checks the shape of a record read back from disk (a hand-edited or foreign line is skipped). */
export function isRunRecord(value: unknown): value is RunRecord {
  if (!value || typeof value !== 'object') return false;
  const r = value as Partial<RunRecord>;
  return (
    typeof r.key === 'string' &&
    typeof r.defense === 'string' &&
    typeof r.spec === 'string' &&
    typeof r.policy === 'string' &&
    typeof r.budget === 'number' &&
    typeof r.victimAccuracy === 'number' &&
    !!r.defender &&
    typeof r.defender.accuracy === 'number' &&
    Array.isArray(r.attackers) &&
    r.attackers.every((a) => a && typeof a.accuracy === 'number' && typeof a.agreement === 'number' && typeof a.labels === 'string') &&
    typeof r.seconds === 'number'
  );
}
