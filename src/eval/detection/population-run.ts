/**
 * `msd eval --detection --thieves ...`: thieves with many identities against detection above the
 * client. Each scenario gets a fresh endpoint (the demo app's middleware with per-client detection,
 * cohorts by tenant header, population detection and fingerprints, a memory store, the simulated
 * clock) and the same benign population (100 clients of 20–100 queries, ten tenants), interleaved in
 * time with the thief's requests. Per scenario: the thief's answers that were clean, defended (an
 * escalated or probation tier) or refused; which detector acted first and after how many of the
 * thief's queries; the knockoff's accuracy from what it received against the same queries answered
 * undefended; and what the benign clients paid (answers changed in top-1, clients refused).
 */
import { argmaxRows, parseDefense } from '../../defenses/index.js';
import {
  calibratePopulation,
  createClientDetection,
  createCohortDetection,
  type DetectionOptions,
  type HodaCalibration,
  type PopulationCalibration,
} from '../../detection/index.js';
import { checkpointHardness, predictProbs, type ContextProviders, type LayersModel } from '../../models/index.js';
import type { FingerprintServingOptions, PopulationServingOptions } from '../../server/clients/options.js';
import type { TransferSet } from '../attackers/index.js';
import type { TrainingSettings } from '../config.js';
import { startDefendedEndpoint } from '../endpoint/defended-endpoint.js';
import { accuracy } from '../records/measures.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';
import { subset, type LabelledImages } from '../world/world.js';
import { BenignPopulation, type BenignCost, type BenignTraffic, type ScenarioServing } from './population-benign.js';
import { asSent, ThiefKnockoffs, ThiefObserver } from './population-thief.js';
import { recordingDetection, type DetectionRecorder } from './recorder.js';
import { DEFAULT_BENIGN, type BenignSettings } from './run.js';
import { calibrateHodaOn, detectionTiers, EVAL_CLIENTS, hardnessOf, holdOut, victimTestSet } from './setup.js';
import type { AttackerStream } from './streams.js';
import { thiefClient, type ThiefScenario, type ThiefTally } from './sybil.js';

export type { BenignCost } from './population-benign.js';

/** The issue's targets. */
export const POPULATION_TARGETS = {
  /** A Sybil Knockoff thief of 10 000 queries over 200 identities: clean answers at most. */
  sybilClean: 2000,
  /** The same with all its identities in one cohort. */
  cohortClean: 500,
  /** Benign answers changed in top-1 (share of all benign answers). */
  benignTop1Changed: 0.01,
  benignRefused: 0,
} as const;

/** A per-identity pace the per-client window never fills: under OOD's 50 queries an hour. */
export const SLOW_PER_HOUR = 40;

export interface PopulationEvalOptions {
  victim: LayersModel;
  checkpoints?: readonly LayersModel[];
  /** The victim's test split: a part calibrates HODA and the population thresholds, the rest feeds the benign clients; all of it scores the knockoffs. */
  victimTest: LabelledImages;
  /** In-distribution images the diluting thieves mix in (the victim's training images). */
  cover: LabelledImages;
  features: number;
  classes: number;
  scenarios: readonly ThiefScenario[];
  /** The attacker's own stream for a scenario (its queries; the identities are the thief client's). */
  streamFor(scenario: ThiefScenario): AttackerStream;
  /** The thief's queries (for the report; the stream decides). */
  thiefQueries: number;
  knockoff: TrainingSettings;
  seed: number;
  providers: ContextProviders;
  /** Rows per thief request (default 10). */
  requestRows?: number;
  benign?: Partial<BenignSettings>;
  /** Over the per-client detection's defaults. */
  detection?: DetectionOptions;
  /** Over the calibrated population options. */
  population?: PopulationServingOptions;
  /** Fingerprint options ({} for the defaults, false for none). Default {}. */
  fingerprints?: FingerprintServingOptions | false;
  /** Simulated time the thief spreads its queries over (and the benign clients start in); default 1 h. */
  spanMs?: number;
  log?: (line: string) => void;
}

export interface ThiefReport {
  scenario: string;
  attacker: string;
  identities: number;
  identitiesUsed: number;
  cohort: boolean;
  dilution: number;
  slow: boolean;
  perClient: boolean;
  attackQueries: number;
  coverQueries: number;
  durationHours: number;
  answers: { clean: number; defended: number; refused: number; cleanBeforeFirstAction: number };
  /** Per detector ("client:hoda", "cohort:ood", "population:young", ...): the thief's queries answered when it first acted; absent: never. */
  firstAction: Record<string, number>;
  /** Per population view: the detectors that flagged when its alarm started. */
  populationFlaggedBy: Record<string, string[]>;
  /** Population alarms starting and ending during the thief's run: [thief queries answered, view, on]; at most 40. */
  alarmTimeline: [number, string, boolean][];
  /** Clean answers the thief got after the first action, by why the answer was clean: its identity was old and clean, or no alarm held. */
  cleanAfterAction: { noAlarm: number; duringAlarm: number };
  detected: boolean;
  /** Absent for the benign-only scenario. */
  knockoffAccuracy?: { undefended: number; withDetection: number };
  benign: BenignCost;
  target?: { what: string; met: boolean };
}

export interface PopulationReport {
  generatedAt: string;
  seed: number;
  victimTestAccuracy: number;
  thiefQueries: number;
  requestRows: number;
  spanHours: number;
  tiers: Record<string, string>;
  ladder: string[];
  probationTier: string;
  hoda: { enabled: boolean; checkpoints: number };
  population: { calibration: PopulationCalibration; options: PopulationServingOptions };
  fingerprints: FingerprintServingOptions | false;
  benignSettings: BenignSettings;
  thieves: ThiefReport[];
  targets: typeof POPULATION_TARGETS & { met: boolean };
}

/** Detection as every scenario serves it, calibrated on the held-out part of the test split. */
interface CalibratedDetection {
  checkpoints?: readonly LayersModel[];
  hodaCalibration?: HodaCalibration;
  detectionOptions: DetectionOptions;
  tiers: Record<string, string>;
  ladder: string[];
  probationTier: string;
  calibration: PopulationCalibration;
  populationOptions: PopulationServingOptions;
}

/** HODA's thresholds, the ladder's tiers and the population thresholds, from the held-out images' undefended answers (benign traffic). */
function calibrateDetection(options: PopulationEvalOptions, held: LabelledImages): CalibratedDetection {
  const { victim, classes, seed } = options;
  const checkpoints = options.checkpoints && options.checkpoints.length >= 2 ? options.checkpoints : undefined;
  const heldHardness = checkpoints ? checkpointHardness(checkpoints, asSent(held.x), held.rows) : undefined;
  const hodaCalibration =
    checkpoints && heldHardness && held.rows >= 100 ? calibrateHodaOn(heldHardness, checkpoints.length, seed, 'population-hoda') : undefined;
  const { detectionOptions, tiers, ladder, madTier } = detectionTiers(options.detection, hodaCalibration, options.providers);
  const probationTier = madTier ? 'mad-argmax' : 'argmax';

  const heldProbs = { rows: held.rows, cols: classes, data: predictProbs(victim, held.x, held.rows) };
  const minQueries = options.population?.minQueries ?? 200;
  const calibration = calibratePopulation(heldProbs, {
    windowQueries: minQueries,
    seed: deriveSeed(seed, 'population-calibration'),
    ...(heldHardness && checkpoints ? { hardness: heldHardness, bins: checkpoints.length } : {}),
  });
  const populationOptions: PopulationServingOptions = {
    ...options.population,
    ood: { ...calibration.options.ood, ...options.population?.ood },
    classes: { ...calibration.options.classes, ...options.population?.classes },
    ...(calibration.options.hoda && !options.population?.hoda ? { hoda: calibration.options.hoda } : {}),
  };
  return { checkpoints, hodaCalibration, detectionOptions, tiers, ladder, probationTier, calibration, populationOptions };
}

/** What every scenario shares. */
interface PopulationRunContext {
  options: PopulationEvalOptions;
  detection: CalibratedDetection;
  fingerprints: FingerprintServingOptions | false;
  hardness: ReturnType<typeof hardnessOf>;
  benign: BenignTraffic;
  knockoffs: ThiefKnockoffs;
  requestRows: number;
  spanMs: number;
  log: (line: string) => void;
}

/** The thief's pace: its requests evenly over the span; a slow thief keeps each identity under SLOW_PER_HOUR. */
function thiefPace(context: PopulationRunContext, scenario: ThiefScenario): { gapMs: number; durationMs: number } {
  const { requestRows, spanMs } = context;
  const expectedRequests = Math.max(1, Math.ceil(context.options.thiefQueries / requestRows));
  const rowsPerRequest = requestRows / (1 - scenario.dilution);
  const slowGap = scenario.slow ? (3_600_000 * rowsPerRequest) / (SLOW_PER_HOUR * scenario.identities) : 0;
  const gapMs = Math.max(spanMs / expectedRequests, slowGap);
  return { gapMs, durationMs: gapMs * expectedRequests };
}

/** In-distribution images a diluting thief mixes in: enough for its share of the queries, drawn per scenario. */
function coverFor(options: PopulationEvalOptions, scenario: ThiefScenario): LabelledImages | undefined {
  const coverOrder = permutation(options.cover.rows, seededRandom(deriveSeed(options.seed, `population-cover-${scenario.name}`)));
  return scenario.dilution > 0
    ? subset(
        options.cover,
        coverOrder.subarray(0, Math.min(options.cover.rows, Math.ceil((options.thiefQueries * scenario.dilution) / (1 - scenario.dilution)) + 100)),
      )
    : undefined;
}

/** A fresh endpoint for one scenario: per-client detection, and above the client (cohorts by tenant, population, fingerprints) unless the scenario is per-client only. */
function startScenarioEndpoint(
  context: PopulationRunContext,
  scenario: ThiefScenario,
  recorder: DetectionRecorder,
  cohortRecorder: DetectionRecorder,
  clock: { now: number },
) {
  const { options, detection, fingerprints } = context;
  const above = !scenario.perClient;
  return startDefendedEndpoint({
    victim: options.victim,
    defense: parseDefense('none'),
    providers: options.providers,
    tiers: detection.tiers,
    clients: {
      ...EVAL_CLIENTS,
      detection: recorder.detection,
      hardness: context.hardness,
      clock: () => clock.now,
      ...(above
        ? {
            cohort: 'header:x-tenant',
            cohortDetection: cohortRecorder.detection,
            population: detection.populationOptions,
            ...(fingerprints ? { fingerprints } : {}),
            probationTier: detection.probationTier,
          }
        : {}),
    },
  });
}

/** One scenario: the thief (if any) and the benign population through a fresh endpoint on the simulated clock, then the thief's knockoffs. */
async function runScenario(context: PopulationRunContext, scenario: ThiefScenario, index: number): Promise<ThiefReport> {
  const { options, detection, requestRows } = context;
  const t0 = Date.UTC(2026, 0, 1);
  const clock = { now: t0 };
  const recorder = recordingDetection(createClientDetection(detection.detectionOptions));
  const cohortRecorder = recordingDetection(createCohortDetection(detection.detectionOptions));
  const endpoint = await startScenarioEndpoint(context, scenario, recorder, cohortRecorder, clock);
  const gate = endpoint.guard.clients!;
  const { gapMs, durationMs } = thiefPace(context, scenario);
  const serving: ScenarioServing = { url: endpoint.url, recorder, cohortRecorder, gate, clock };
  const benign = new BenignPopulation(serving, context.benign, t0, Math.max(context.spanMs, durationMs));
  const observer = new ThiefObserver(gate);
  const thief = thiefClient({
    url: endpoint.url,
    scenario,
    features: options.features,
    classes: options.classes,
    cover: coverFor(options, scenario),
    clean: (x, rows) => ({ rows, cols: options.classes, data: predictProbs(options.victim, asSent(x), rows) }),
    before: async (_key, time) => {
      await benign.runUntil(time);
      clock.now = Math.max(clock.now, time);
      recorder.next(observer.record, clock.now);
      cohortRecorder.next(observer.cohortRecord, clock.now);
    },
    after: (tally) => observer.note(tally),
    gapMs,
    startMs: t0 + 600_000,
    keyPrefix: `thief-${index}-`,
    random: seededRandom(deriveSeed(options.seed, `population-thief-${scenario.name}`)),
  });
  const stream = scenario.policy === 'none' ? undefined : options.streamFor(scenario);
  const started = Date.now();
  let transfer: TransferSet | undefined;
  try {
    if (stream) transfer = await stream.run(thief, requestRows);
    await benign.runUntil(Infinity);
  } finally {
    await endpoint.close();
    await gate.close();
  }
  const cost = benign.finish();
  const seconds = () => ((Date.now() - started) / 1000).toFixed(0);
  if (!stream || !transfer) {
    context.log(
      `benign only: ${cost.answers} answers to ${cost.clients} clients; population alarms started: all ${cost.alarmStarts.all}, young ${cost.alarmStarts.young}; answers changed ${cost.changed}, top-1 changed ${cost.top1Changed}; refused clients ${cost.refusedClients}; ${seconds()} s`,
    );
    return benignOnlyReport(scenario, cost);
  }
  const knockoffAccuracy = await context.knockoffs.accuracies(scenario, transfer);
  const report = thiefReport(scenario, stream.name, thief.tally, durationMs, observer, knockoffAccuracy, cost);
  context.log(`${thiefSummary(report, thief.tally)}; ${seconds()} s`);
  return report;
}

function benignOnlyReport(scenario: ThiefScenario, cost: BenignCost): ThiefReport {
  return {
    scenario: scenario.name,
    attacker: 'none',
    identities: 0,
    identitiesUsed: 0,
    cohort: false,
    dilution: 0,
    slow: false,
    perClient: false,
    attackQueries: 0,
    coverQueries: 0,
    durationHours: 0,
    answers: { clean: 0, defended: 0, refused: 0, cleanBeforeFirstAction: 0 },
    firstAction: {},
    populationFlaggedBy: {},
    alarmTimeline: [],
    cleanAfterAction: { noAlarm: 0, duringAlarm: 0 },
    detected: false,
    benign: cost,
    target: {
      what: 'no population alarm, no benign client refused',
      met: cost.alarmStarts.all + cost.alarmStarts.young === 0 && cost.refusedClients === 0,
    },
  };
}

function thiefReport(
  scenario: ThiefScenario,
  attacker: string,
  tally: ThiefTally,
  durationMs: number,
  observer: ThiefObserver,
  knockoffAccuracy: { undefended: number; withDetection: number },
  cost: BenignCost,
): ThiefReport {
  return {
    scenario: scenario.name,
    attacker,
    identities: scenario.identities,
    identitiesUsed: tally.identitiesUsed,
    cohort: scenario.cohort,
    dilution: scenario.dilution,
    slow: scenario.slow,
    perClient: scenario.perClient,
    attackQueries: tally.attack,
    coverQueries: tally.cover,
    durationHours: durationMs / 3_600_000,
    answers: { clean: tally.clean, defended: tally.defended, refused: tally.refused, cleanBeforeFirstAction: tally.cleanBeforeAction },
    firstAction: observer.firstAction,
    populationFlaggedBy: observer.populationFlaggedBy,
    alarmTimeline: observer.alarmTimeline,
    cleanAfterAction: observer.cleanAfterAction,
    detected: tally.defended + tally.refused > 0,
    knockoffAccuracy,
    benign: cost,
    target: targetFor(scenario, tally),
  };
}

/** The scenario's log line (without the time it took). */
function thiefSummary(report: ThiefReport, tally: ThiefTally): string {
  const { undefended, withDetection } = report.knockoffAccuracy!;
  const cost = report.benign;
  return `${report.scenario}: ${tally.attack} queries (+${tally.cover} cover) over ${tally.identitiesUsed} identities; clean ${tally.clean} (${tally.cleanBeforeAction} before the first action), defended ${tally.defended}, refused ${tally.refused}; first: ${
    Object.entries(report.firstAction)
      .sort((a, b) => a[1] - b[1])
      .map(([d, q]) => `${d} ${q}`)
      .join(', ') || 'none'
  }; knockoff ${(undefended * 100).toFixed(1)}% undefended, ${(withDetection * 100).toFixed(1)}% with detection; benign top-1 changed ${cost.top1Changed}/${cost.answers}, refused clients ${cost.refusedClients}`;
}

export async function runPopulationEvaluation(options: PopulationEvalOptions): Promise<PopulationReport> {
  const log = options.log ?? (() => {});
  const { features, classes, victim, seed } = options;
  const requestRows = options.requestRows ?? 10;
  const spanMs = options.spanMs ?? 3_600_000;
  const benignSettings: BenignSettings = { ...DEFAULT_BENIGN, clients: 100, ...options.benign };
  // 3000 of the test split (a seeded draw) calibrate, the rest (7000 on MNIST) are the benign clients' queries, none sent twice.
  const { calibration: held, benign: benignPool } = holdOut(
    options.victimTest,
    Math.min(3000, Math.floor(options.victimTest.rows * 0.3)),
    seed,
    'population-test-parts',
  );
  const detection = calibrateDetection(options, held);
  const { calibration, populationOptions, checkpoints, tiers } = detection;
  const fingerprints = options.fingerprints ?? {};
  log(
    `population: benign unsure share ${(calibration.benignRate * 100).toFixed(1)}%, flag above ${((populationOptions.ood?.maxRate ?? 0) * 100).toFixed(1)}%; class distance above ${(populationOptions.classes?.maxDistance ?? 0).toFixed(3)}; hardness distance above ${populationOptions.hoda?.maxDistance?.toFixed(3) ?? '– (HODA off)'}`,
  );

  const test = victimTestSet(victim, options.victimTest, classes);
  const benignClean = predictProbs(victim, asSent(benignPool.x), benignPool.rows);
  const benign: BenignTraffic = {
    pool: benignPool,
    clean: benignClean,
    cleanTop1: argmaxRows({ rows: benignPool.rows, cols: classes, data: benignClean }),
    settings: benignSettings,
    features,
    classes,
    seed,
  };
  const context: PopulationRunContext = {
    options,
    detection,
    fingerprints,
    hardness: hardnessOf(checkpoints),
    benign,
    knockoffs: new ThiefKnockoffs(victim, classes, features, options.knockoff, test, seed),
    requestRows,
    spanMs,
    log,
  };

  const thieves: ThiefReport[] = [];
  for (const scenario of options.scenarios) thieves.push(await runScenario(context, scenario, thieves.length));

  const met = thieves.every(
    (t) => t.target?.met !== false && t.benign.refusedClients === 0 && t.benign.top1ChangedShare <= POPULATION_TARGETS.benignTop1Changed,
  );
  return {
    generatedAt: new Date().toISOString(),
    seed,
    victimTestAccuracy: accuracy(test.victimTop1, test.labels),
    thiefQueries: options.thiefQueries,
    requestRows,
    spanHours: spanMs / 3_600_000,
    tiers,
    ladder: detection.ladder,
    probationTier: detection.probationTier,
    hoda: { enabled: detection.hodaCalibration !== undefined, checkpoints: checkpoints?.length ?? 0 },
    population: { calibration, options: populationOptions },
    fingerprints,
    benignSettings,
    thieves,
    targets: { ...POPULATION_TARGETS, met },
  };
}

/** The issue's target for a scenario, when it has one. */
function targetFor(scenario: ThiefScenario, tally: ThiefTally): ThiefReport['target'] {
  if (scenario.perClient || scenario.slow) return undefined;
  if (scenario.policy === 'random' && scenario.identities >= 100 && scenario.dilution === 0) {
    const limit = scenario.cohort ? POPULATION_TARGETS.cohortClean : POPULATION_TARGETS.sybilClean;
    return { what: `at most ${limit} clean answers`, met: tally.clean <= limit };
  }
  if (scenario.dilution > 0 && scenario.dilution <= 0.5) return { what: 'detected', met: tally.defended + tally.refused > 0 };
  return undefined;
}
