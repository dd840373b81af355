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
import { calibratePopulation, createClientDetection, createCohortDetection, type DetectionOptions, type PopulationCalibration } from '../../detection/index.js';
import { checkpointHardness, predictProbs, type ContextProviders, type LayersModel } from '../../models/index.js';
import type { FingerprintServingOptions, PopulationServingOptions } from '../../server/clients/options.js';
import { trainKnockoff, type TransferSet } from '../attackers/index.js';
import type { TrainingSettings } from '../config.js';
import { startDefendedEndpoint } from '../endpoint/defended-endpoint.js';
import { EndpointError, kserveClient } from '../endpoint/kserve-client.js';
import { accuracy } from '../records/measures.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';
import { subset, type LabelledImages } from '../world/world.js';
import { newRecord, recordingDetection, type ClientRecord } from './recorder.js';
import { DEFAULT_BENIGN, type BenignSettings } from './run.js';
import { calibrateHodaOn, detectionTiers, EVAL_CLIENTS, hardnessOf, holdOut, victimTestSet } from './setup.js';
import type { AttackerStream } from './streams.js';
import { isRefusedRow, thiefClient, type ThiefScenario, type ThiefTally } from './sybil.js';

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

export interface BenignCost {
  clients: number;
  answers: number;
  /** Answers that differ from the undefended ones (any tier). */
  changed: number;
  top1Changed: number;
  top1ChangedShare: number;
  /** Answers given while a population alarm held. */
  duringAlarm: number;
  /** Population alarms that started while benign clients were served (per view). */
  alarmStarts: Record<string, number>;
  refusedClients: number;
  escalatedClients: number;
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

/** Pixels as the endpoint gets them: the client sends UINT8 (kserve-client), so the undefended answer is the one to the rounded image. */
function asSent(x: Float32Array): Float32Array {
  return Float32Array.from(x, (v) => Math.max(0, Math.min(255, Math.round(v * 255))) / 255);
}

interface BenignClient {
  key: string;
  tenant: string;
  start: number;
  count: number;
  sent: number;
  due: number;
  record: ClientRecord;
  refused: boolean;
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
  const checkpoints = options.checkpoints && options.checkpoints.length >= 2 ? options.checkpoints : undefined;
  const heldHardness = checkpoints ? checkpointHardness(checkpoints, asSent(held.x), held.rows) : undefined;
  const hodaCalibration =
    checkpoints && heldHardness && held.rows >= 100 ? calibrateHodaOn(heldHardness, checkpoints.length, seed, 'population-hoda') : undefined;
  const { detectionOptions, tiers, ladder, madTier } = detectionTiers(options.detection, hodaCalibration, options.providers);
  const probationTier = madTier ? 'mad-argmax' : 'argmax';

  // Population thresholds from the held-out part's undefended answers (benign traffic).
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
  const fingerprints = options.fingerprints ?? {};
  log(
    `population: benign unsure share ${(calibration.benignRate * 100).toFixed(1)}%, flag above ${((populationOptions.ood?.maxRate ?? 0) * 100).toFixed(1)}%; class distance above ${(populationOptions.classes?.maxDistance ?? 0).toFixed(3)}; hardness distance above ${populationOptions.hoda?.maxDistance.toFixed(3) ?? '– (HODA off)'}`,
  );

  const test = victimTestSet(victim, options.victimTest, classes);
  const benignClean = predictProbs(victim, asSent(benignPool.x), benignPool.rows);
  const benignTop1 = argmaxRows({ rows: benignPool.rows, cols: classes, data: benignClean });
  const hardness = hardnessOf(checkpoints);
  const cleanCache = new Map<string, number>();
  const settings = { classes, inputShape: [features], knockoff: options.knockoff, test, seed };

  const thieves: ThiefReport[] = [];
  for (const scenario of options.scenarios) {
    const t0 = Date.UTC(2026, 0, 1);
    let clock = t0;
    const recorder = recordingDetection(createClientDetection(detectionOptions));
    const cohortRecorder = recordingDetection(createCohortDetection(detectionOptions));
    const above = !scenario.perClient;
    const endpoint = await startDefendedEndpoint({
      victim,
      defense: parseDefense('none'),
      providers: options.providers,
      tiers,
      clients: {
        ...EVAL_CLIENTS,
        detection: recorder.detection,
        hardness,
        clock: () => clock,
        ...(above
          ? {
              cohort: 'header:x-tenant',
              cohortDetection: cohortRecorder.detection,
              population: populationOptions,
              ...(fingerprints ? { fingerprints } : {}),
              probationTier,
            }
          : {}),
      },
    });
    const gate = endpoint.guard.clients!;
    // The thief's pace: its requests evenly over the span; a slow thief keeps each identity under SLOW_PER_HOUR.
    const expectedRequests = Math.max(1, Math.ceil(options.thiefQueries / requestRows));
    const rowsPerRequest = requestRows / (1 - scenario.dilution);
    const slowGap = scenario.slow ? (3_600_000 * rowsPerRequest) / (SLOW_PER_HOUR * scenario.identities) : 0;
    const gapMs = Math.max(spanMs / expectedRequests, slowGap);
    const thiefStart = t0 + 600_000;
    const durationMs = gapMs * expectedRequests;
    const benignSpan = Math.max(spanMs, durationMs);

    // The benign population: the same in every scenario (its own seed), ten tenants, no image sent twice.
    const random = seededRandom(deriveSeed(seed, 'population-benign'));
    const order = permutation(benignPool.rows, seededRandom(deriveSeed(seed, 'population-benign-order')));
    let next = 0;
    const benignClients: BenignClient[] = Array.from({ length: benignSettings.clients }, (_, i) => {
      const count = benignSettings.minQueries + Math.floor(random() * (benignSettings.maxQueries - benignSettings.minQueries + 1));
      const start = next;
      next += count;
      return {
        key: `benign-${i}`,
        tenant: `benign-org-${i % 10}`,
        start,
        count,
        sent: 0,
        due: t0 + Math.floor(random() * benignSpan),
        record: newRecord(),
        refused: false,
      };
    });
    const cohortRecords = new Map<string, ClientRecord>();
    const cohortRecordOf = (tenant: string) => cohortRecords.get(tenant) ?? (cohortRecords.set(tenant, newRecord()), cohortRecords.get(tenant)!);
    const cost: BenignCost = {
      clients: benignClients.length,
      answers: 0,
      changed: 0,
      top1Changed: 0,
      top1ChangedShare: 0,
      duringAlarm: 0,
      alarmStarts: { all: 0, young: 0 },
      refusedClients: 0,
      escalatedClients: 0,
    };
    const benignAlarm: Record<string, boolean> = { all: false, young: false };
    const benignClientsByKey = new Map(
      benignClients.map((c) => [c.key, kserveClient(endpoint.url, { headers: { 'x-api-key': c.key, 'x-tenant': c.tenant }, label: c.key })]),
    );
    const alarmOn = () => {
      const status = gate.populationStatus();
      return status !== undefined && (status.views.all.alarm || status.views.young.alarm);
    };
    const [gapLow, gapHigh] = benignSettings.gapSeconds;
    const runBenignUntil = async (until: number): Promise<void> => {
      for (;;) {
        let c: BenignClient | undefined;
        for (const candidate of benignClients) if (!candidate.refused && candidate.sent < candidate.count && (!c || candidate.due < c.due)) c = candidate;
        if (!c || c.due > until) return;
        clock = Math.max(clock, c.due);
        recorder.next(c.record, clock);
        cohortRecorder.next(cohortRecordOf(c.tenant), clock);
        const rows = Math.min(c.count - c.sent, 1 + Math.floor(random() * benignSettings.maxRows));
        const x = new Float32Array(rows * features);
        const rowIds: number[] = [];
        for (let r = 0; r < rows; r++) {
          const id = order[(c.start + c.sent + r) % benignPool.rows];
          rowIds.push(id);
          x.set(benignPool.x.subarray(id * features, (id + 1) * features), r * features);
        }
        try {
          const got = await benignClientsByKey.get(c.key)!.infer(x, rows, features);
          const during = alarmOn();
          const status = gate.populationStatus();
          for (const view of ['all', 'young'] as const) {
            const on = status?.views[view].alarm === true;
            if (on && !benignAlarm[view]) cost.alarmStarts[view]++;
            benignAlarm[view] = on;
          }
          for (let r = 0; r < rows; r++) {
            const id = rowIds[r];
            let diff = 0;
            let best = 0;
            for (let j = 0; j < classes; j++) {
              diff = Math.max(diff, Math.abs(got.data[r * classes + j] - benignClean[id * classes + j]));
              if (got.data[r * classes + j] > got.data[r * classes + best]) best = j;
            }
            cost.answers++;
            if (during) cost.duringAlarm++;
            if (diff > 1e-4) cost.changed++;
            if (best !== benignTop1[id]) cost.top1Changed++;
          }
        } catch (error) {
          if (!(error instanceof EndpointError)) throw error;
          c.refused = true;
          continue;
        }
        c.sent += rows;
        c.due = clock + Math.round((gapLow + random() * (gapHigh - gapLow)) * 1000);
      }
    };

    const thiefRecord = newRecord();
    const thiefCohortRecord = newRecord();
    const firstAction: Record<string, number> = {};
    const populationFlaggedBy: Record<string, string[]> = {};
    const alarmTimeline: [number, string, boolean][] = [];
    const alarmState: Record<string, boolean> = { all: false, young: false };
    const cleanAfterAction = { noAlarm: 0, duringAlarm: 0 };
    let cleanSeen = 0;
    const note = (tally: ThiefTally): void => {
      const fresh = tally.clean - cleanSeen;
      cleanSeen = tally.clean;
      if (tally.cleanBeforeAction < tally.clean && fresh > 0) {
        const during = alarmState.all || alarmState.young;
        if (during) cleanAfterAction.duringAlarm += fresh;
        else cleanAfterAction.noAlarm += fresh;
      }
      for (const d of Object.keys(thiefRecord.firstFlag)) firstAction[`client:${d}`] ??= tally.attack;
      if (thiefRecord.firstAction !== undefined) firstAction['client:policy'] ??= tally.attack;
      for (const d of Object.keys(thiefCohortRecord.firstFlag)) firstAction[`cohort:${d}`] ??= tally.attack;
      const status = gate.populationStatus();
      for (const view of ['all', 'young'] as const) {
        const on = status?.views[view].alarm === true;
        if (on !== alarmState[view] && alarmTimeline.length < 40) alarmTimeline.push([tally.attack, view, on]);
        alarmState[view] = on;
        if (!on || firstAction[`population:${view}`] !== undefined) continue;
        firstAction[`population:${view}`] = tally.attack;
        populationFlaggedBy[view] = status.views[view].verdicts.filter((v) => v.flagged).map((v) => v.detector);
      }
    };
    const coverOrder = permutation(options.cover.rows, seededRandom(deriveSeed(seed, `population-cover-${scenario.name}`)));
    const cover =
      scenario.dilution > 0
        ? subset(
            options.cover,
            coverOrder.subarray(0, Math.min(options.cover.rows, Math.ceil((options.thiefQueries * scenario.dilution) / (1 - scenario.dilution)) + 100)),
          )
        : undefined;
    const thief = thiefClient({
      url: endpoint.url,
      scenario,
      features,
      classes,
      cover,
      clean: (x, rows) => ({ rows, cols: classes, data: predictProbs(victim, asSent(x), rows) }),
      before: async (_key, time) => {
        await runBenignUntil(time);
        clock = Math.max(clock, time);
        recorder.next(thiefRecord, clock);
        cohortRecorder.next(thiefCohortRecord, clock);
      },
      after: note,
      gapMs,
      startMs: thiefStart,
      keyPrefix: `thief-${thieves.length}-`,
      random: seededRandom(deriveSeed(seed, `population-thief-${scenario.name}`)),
    });
    const stream = scenario.policy === 'none' ? undefined : options.streamFor(scenario);
    const started = Date.now();
    let transfer: TransferSet | undefined;
    try {
      if (stream) transfer = await stream.run(thief, requestRows);
      await runBenignUntil(Infinity);
    } finally {
      await endpoint.close();
      await gate.close();
    }
    cost.top1ChangedShare = cost.answers ? cost.top1Changed / cost.answers : 0;
    cost.refusedClients = benignClients.filter((c) => c.refused).length;
    cost.escalatedClients = benignClients.filter((c) => c.record.worstAction !== 'default').length;
    const tally = thief.tally;
    if (!stream || !transfer) {
      thieves.push({
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
      });
      log(
        `benign only: ${cost.answers} answers to ${cost.clients} clients; population alarms started: all ${cost.alarmStarts.all}, young ${cost.alarmStarts.young}; answers changed ${cost.changed}, top-1 changed ${cost.top1Changed}; refused clients ${cost.refusedClients}; ${((Date.now() - started) / 1000).toFixed(0)} s`,
      );
      continue;
    }
    const done: TransferSet = transfer;

    // The knockoff on what the thief actually got (refused queries dropped), and on the same queries answered undefended.
    const kept: number[] = [];
    for (let r = 0; r < done.answers.rows; r++) if (!isRefusedRow(done.answers.data, r * classes, classes)) kept.push(r);
    const received: TransferSet =
      kept.length === done.answers.rows
        ? done
        : {
            x: Float32Array.from(kept.flatMap((r) => Array.from(done.x.subarray(r * features, (r + 1) * features)))),
            answers: {
              rows: kept.length,
              cols: classes,
              data: Float32Array.from(kept.flatMap((r) => Array.from(done.answers.data.subarray(r * classes, (r + 1) * classes)))),
            },
            indices: Int32Array.from(kept, (r) => done.indices[r]),
          };
    const withDetection =
      received.answers.rows > 0 ? (await trainKnockoff(received, 'soft', settings)).accuracy : accuracy(new Int32Array(test.rows), test.labels);
    // The undefended baseline depends only on the queries: the random Knockoff's are the same in every scenario.
    const cleanKey = scenario.policy === 'random' ? `random:${done.answers.rows}` : undefined;
    let undefended = cleanKey !== undefined ? cleanCache.get(cleanKey) : undefined;
    if (undefended === undefined) {
      const clean = { ...done, answers: { rows: done.answers.rows, cols: classes, data: predictProbs(victim, asSent(done.x), done.answers.rows) } };
      undefended = (await trainKnockoff(clean, 'soft', settings)).accuracy;
      if (cleanKey !== undefined) cleanCache.set(cleanKey, undefended);
    }
    const report: ThiefReport = {
      scenario: scenario.name,
      attacker: stream.name,
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
      firstAction,
      populationFlaggedBy,
      alarmTimeline,
      cleanAfterAction,
      detected: tally.defended + tally.refused > 0,
      knockoffAccuracy: { undefended, withDetection },
      benign: cost,
      target: targetFor(scenario, tally),
    };
    thieves.push(report);
    log(
      `${scenario.name}: ${tally.attack} queries (+${tally.cover} cover) over ${tally.identitiesUsed} identities; clean ${tally.clean} (${tally.cleanBeforeAction} before the first action), defended ${tally.defended}, refused ${tally.refused}; first: ${
        Object.entries(firstAction)
          .sort((a, b) => a[1] - b[1])
          .map(([d, q]) => `${d} ${q}`)
          .join(', ') || 'none'
      }; knockoff ${(undefended * 100).toFixed(1)}% undefended, ${(withDetection * 100).toFixed(1)}% with detection; benign top-1 changed ${cost.top1Changed}/${cost.answers}, refused clients ${cost.refusedClients}; ${((Date.now() - started) / 1000).toFixed(0)} s`,
    );
  }

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
    ladder,
    probationTier,
    hoda: { enabled: hodaCalibration !== undefined, checkpoints: checkpoints?.length ?? 0 },
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
