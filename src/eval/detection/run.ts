/**
 * The detection evaluation: attackers' query streams and benign clients through the real endpoint
 * (the demo app's middleware with `clients`, a memory store and the escalation tiers), one client id
 * each, on a simulated clock. Reports, per attacker, the queries until each detector first flags and
 * the accuracy of a knockoff trained on what the attacker actually got (clean answers before the
 * flag, the escalated tier's after) against one trained on clean answers throughout; and, over the
 * benign clients, each detector's false-positive rate.
 */
import { createClientDetection, type DetectionOptions, type HodaCalibration } from '../../detection/index.js';
import { parseDefense } from '../../defenses/index.js';
import { checkpointHardness, predictProbs, type ContextProviders, type LayersModel } from '../../models/index.js';
import type { TrainingSettings } from '../config.js';
import { startDefendedEndpoint } from '../endpoint/defended-endpoint.js';
import { EndpointError, kserveClient, type InferenceClient } from '../endpoint/kserve-client.js';
import { trainKnockoff, type VictimTestSet } from '../attackers/index.js';
import { accuracy } from '../records/measures.js';
import { deriveSeed, seededRandom } from '../random.js';
import type { LabelledImages } from '../world/world.js';
import { newRecord, recordingDetection, type ClientRecord, type DetectionRecorder } from './recorder.js';
import { calibrateHodaOn, detectionTiers, EVAL_CLIENTS, hardnessOf, holdOut, victimTestSet } from './setup.js';
import type { AttackerStream } from './streams.js';

export const DETECTORS = ['ood', 'prada', 'hoda', 'budget'] as const;
/** The issue's targets: queries until flagged per attacker family, and benign clients flagged. */
export const TARGETS = { knockoff: 200, jbda: 500, benignFlagged: 0, benignClients: 100 } as const;

export interface BenignSettings {
  clients: number;
  minQueries: number;
  maxQueries: number;
  /** Rows per request, 1 to this. */
  maxRows: number;
  /** Simulated seconds between a client's requests, uniform in this range. */
  gapSeconds: readonly [number, number];
}

export const DEFAULT_BENIGN: BenignSettings = { clients: 120, minQueries: 20, maxQueries: 100, maxRows: 5, gapSeconds: [5, 120] };

export interface DetectionEvalOptions {
  victim: LayersModel;
  /** The victim's training checkpoints (HODA); without them HODA is off. */
  checkpoints?: readonly LayersModel[];
  /** The victim's test split: one half calibrates HODA, the other half feeds the benign clients; all of it scores the knockoffs. */
  victimTest: LabelledImages;
  features: number;
  classes: number;
  streams: readonly AttackerStream[];
  knockoff: TrainingSettings;
  seed: number;
  providers: ContextProviders;
  /** Rows per attacker request (default 10) and simulated seconds between them (default 1). */
  requestRows?: number;
  attackerGapSeconds?: number;
  benign?: Partial<BenignSettings>;
  /** Over the detection's defaults (HODA's calibration is added here). */
  detection?: DetectionOptions;
  log?: (line: string) => void;
}

export type DetectorFigures = Partial<Record<(typeof DETECTORS)[number], number | null>>;

export interface AttackerDetection {
  name: string;
  family: string;
  queries: number;
  /** Per detector: queries until it first flagged (null: not within the stream). */
  firstFlag: DetectorFigures;
  /** Queries until the first detector flagged (null: none did). */
  flaggedAt: number | null;
  /** Queries until the policy first left the default (the escalation point). */
  escalatedAt: number | null;
  target: number | null;
  metTarget: boolean | null;
  /** Knockoff (soft labels) accuracy on the victim's test set: trained on clean answers, and on the answers got through the detecting endpoint. */
  knockoffAccuracy: { clean: number; withDetection: number };
  worstAction: string;
  /** Per detector: score and evidence after the attacker's last query. */
  lastEvidence: Record<string, Record<string, number>>;
}

export interface DetectionReport {
  generatedAt: string;
  seed: number;
  victimTestAccuracy: number;
  detectors: string[];
  tiers: Record<string, string>;
  ladder: string[];
  hoda: { enabled: boolean; checkpoints: number; calibration?: HodaCalibration; note?: string };
  requestRows: number;
  attackers: AttackerDetection[];
  benign: {
    clients: number;
    queries: { total: number; min: number; max: number };
    flagged: Record<string, number>;
    falsePositiveRate: Record<string, number>;
    /** Clients whose answers left the default defense. */
    escalated: number;
  };
  targets: typeof TARGETS & { met: boolean };
}

/** Each stream's requests go through here: the client id header, the simulated time, one row batch per request. */
function detectingClient(url: string, key: string, onRequest: () => void): InferenceClient {
  return kserveClient(url, { headers: { 'x-api-key': key }, onRequest, label: `client ${key}` });
}

/** What every client of one detection run shares: the endpoint, the recording detection, the simulated clock. */
interface DetectionRunContext {
  options: DetectionEvalOptions;
  url: string;
  recorder: DetectionRecorder;
  test: VictimTestSet;
  /** Simulated time of the latest request (ms). */
  clock: number;
}

const figures = (record: ClientRecord): DetectorFigures => Object.fromEntries(DETECTORS.map((d) => [d, record.firstFlag[d] ?? null]));

/** One attacker's stream through the detecting endpoint, one request every attackerGapSeconds, then its knockoffs. */
async function runAttacker(context: DetectionRunContext, stream: AttackerStream, requestRows: number): Promise<AttackerDetection> {
  const { options, recorder, test } = context;
  const { features, classes, victim, seed } = options;
  const record = newRecord();
  const gap = (options.attackerGapSeconds ?? 1) * 1000;
  const client = detectingClient(context.url, `attacker-${stream.name}`, () => recorder.next(record, (context.clock += gap)));
  const transfer = await stream.run(client, requestRows);
  const flags = Object.values(record.firstFlag);
  const flaggedAt = flags.length ? Math.min(...flags) : null;
  const target = stream.family === 'knockoff' ? TARGETS.knockoff : stream.family === 'jbda' ? TARGETS.jbda : null;
  const settings = { classes, inputShape: [features], knockoff: options.knockoff, test, seed };
  const clean = { ...transfer, answers: { rows: transfer.answers.rows, cols: classes, data: predictProbs(victim, transfer.x, transfer.answers.rows) } };
  const withDetection = await trainKnockoff(transfer, 'soft', settings);
  const cleanOutcome = await trainKnockoff(clean, 'soft', settings);
  const result: AttackerDetection = {
    name: stream.name,
    family: stream.family,
    queries: record.queries,
    firstFlag: figures(record),
    flaggedAt,
    escalatedAt: record.firstAction ?? null,
    target,
    metTarget: target === null ? null : flaggedAt !== null && flaggedAt <= target,
    knockoffAccuracy: { clean: cleanOutcome.accuracy, withDetection: withDetection.accuracy },
    worstAction: record.worstAction,
    lastEvidence: record.last,
  };
  options.log?.(
    `${stream.name}: ${record.queries} queries, first flag ${flaggedAt ?? 'none'} (${DETECTORS.map((d) => `${d} ${result.firstFlag[d] ?? '–'}`).join(', ')}); knockoff ${(cleanOutcome.accuracy * 100).toFixed(1)}% clean, ${(withDetection.accuracy * 100).toFixed(1)}% with detection`,
  );
  return result;
}

interface BenignClientRun {
  key: string;
  start: number;
  count: number;
  sent: number;
  record: ClientRecord;
  due: number;
}

/** The benign clients, each a slice of `images` starting within the hour after the clock; their requests interleaved by due time. */
async function runBenignClients(
  context: DetectionRunContext,
  images: LabelledImages,
  settings: BenignSettings,
  random: () => number,
): Promise<BenignClientRun[]> {
  const { features } = context.options;
  const clients: BenignClientRun[] = Array.from({ length: settings.clients }, (_, i) => {
    const want = settings.minQueries + Math.floor(random() * (settings.maxQueries - settings.minQueries + 1));
    const count = Math.min(want, images.rows);
    const start = Math.floor(random() * (images.rows - count + 1));
    return { key: `benign-${i}`, start, count, sent: 0, record: newRecord(), due: context.clock + Math.floor(random() * 3_600_000) };
  });
  const [gapLow, gapHigh] = settings.gapSeconds;
  for (;;) {
    let next: BenignClientRun | undefined;
    for (const c of clients) if (c.sent < c.count && (!next || c.due < next.due)) next = c;
    if (!next) break;
    const c = next;
    const rows = Math.min(c.count - c.sent, 1 + Math.floor(random() * settings.maxRows));
    const from = c.start + c.sent;
    context.clock = Math.max(context.clock, c.due);
    const client = detectingClient(context.url, c.key, () => context.recorder.next(c.record, context.clock));
    try {
      await client.infer(images.x.subarray(from * features, (from + rows) * features), rows, features);
    } catch (error) {
      // A benign client throttled or refused: counted through its record (worst action), and it stops.
      if (!(error instanceof EndpointError)) throw error;
      c.sent = c.count;
      continue;
    }
    c.sent += rows;
    c.due = context.clock + Math.round((gapLow + random() * (gapHigh - gapLow)) * 1000);
  }
  return clients;
}

/** Over the benign clients: how many each detector flagged, its false-positive rate, and how many were escalated. */
function benignSummary(records: readonly ClientRecord[], queries: readonly number[]): DetectionReport['benign'] {
  const flagged: Record<string, number> = {};
  for (const d of [...DETECTORS, 'any'] as const)
    flagged[d] = records.filter((r) => (d === 'any' ? Object.keys(r.firstFlag).length > 0 : r.firstFlag[d] !== undefined)).length;
  const falsePositiveRate = Object.fromEntries(Object.entries(flagged).map(([d, n]) => [d, records.length ? n / records.length : 0]));
  return {
    clients: records.length,
    queries: { total: queries.reduce((a, b) => a + b, 0), min: Math.min(...queries), max: Math.max(...queries) },
    flagged,
    falsePositiveRate,
    escalated: records.filter((r) => r.worstAction !== 'default').length,
  };
}

function hodaSummary(checkpoints: readonly LayersModel[] | undefined, calibration: HodaCalibration | undefined, turnedOff: boolean): DetectionReport['hoda'] {
  if (turnedOff) return { enabled: false, checkpoints: checkpoints?.length ?? 0, note: 'turned off (hoda.enabled false in the detection options)' };
  return checkpoints
    ? {
        enabled: calibration !== undefined,
        checkpoints: checkpoints.length,
        calibration,
        note: calibration ? undefined : 'fewer than 100 held-out images: HODA not calibrated',
      }
    : { enabled: false, checkpoints: 0, note: 'the victim has no training checkpoints: HODA off' };
}

export async function runDetectionEvaluation(options: DetectionEvalOptions): Promise<DetectionReport> {
  const { classes, victim, seed } = options;
  const requestRows = options.requestRows ?? 10;
  const benignSettings = { ...DEFAULT_BENIGN, ...options.benign };
  // A seeded random half of the test split calibrates HODA, the other half feeds the benign clients.
  const { calibration: held, benign: benignImages } = holdOut(options.victimTest, Math.floor(options.victimTest.rows / 2), seed, 'detection-test-halves');
  const checkpoints = options.checkpoints && options.checkpoints.length >= 2 ? options.checkpoints : undefined;
  const hodaCalibration =
    checkpoints && held.rows >= 100
      ? calibrateHodaOn(checkpointHardness(checkpoints, held.x, held.rows), checkpoints.length, seed, 'hoda-calibration')
      : undefined;
  const { detectionOptions, tiers, ladder } = detectionTiers(options.detection, hodaCalibration, options.providers);
  const recorder = recordingDetection(createClientDetection(detectionOptions));

  const endpoint = await startDefendedEndpoint({
    victim,
    defense: parseDefense('none'),
    providers: options.providers,
    tiers,
    // The gate's own time (store expiry, a paced client's slots) is the simulation's, as the detectors' is.
    clients: { ...EVAL_CLIENTS, detection: recorder.detection, hardness: hardnessOf(checkpoints), clock: () => context.clock },
  });
  const test = victimTestSet(victim, options.victimTest, classes);
  const context: DetectionRunContext = { options, url: endpoint.url, recorder, test, clock: Date.UTC(2026, 0, 1) };
  const victimTestAccuracy = accuracy(test.victimTop1, test.labels);

  const attackers: AttackerDetection[] = [];
  const random = seededRandom(deriveSeed(seed, 'detection-benign'));
  let benignClients: BenignClientRun[] = [];
  try {
    for (const stream of options.streams) attackers.push(await runAttacker(context, stream, requestRows));
    // Benign clients: slices of the victim's held-out test half, at human-ish rates, interleaved.
    benignClients = await runBenignClients(context, benignImages, benignSettings, random);
  } finally {
    await endpoint.close();
    await endpoint.guard.clients?.close();
  }

  const benign = benignSummary(
    benignClients.map((c) => c.record),
    benignClients.map((c) => c.count),
  );
  const met = attackers.every((a) => a.metTarget !== false) && benign.flagged.any === TARGETS.benignFlagged && benign.clients >= TARGETS.benignClients;
  return {
    generatedAt: new Date().toISOString(),
    seed,
    victimTestAccuracy,
    detectors: [...DETECTORS],
    tiers,
    ladder,
    hoda: hodaSummary(checkpoints, hodaCalibration, options.detection?.hoda?.enabled === false),
    requestRows,
    attackers,
    benign,
    targets: { ...TARGETS, met },
  };
}
