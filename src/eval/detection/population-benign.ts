/**
 * The benign population of the thieves' evaluation (population-run.ts): the same clients in every
 * scenario (their own seed), ten tenants, no image sent twice, their requests interleaved in
 * simulated time with the thief's; and what detection cost them: answers changed against the
 * undefended ones, population alarms while they were served, clients refused or escalated.
 */
import type { ClientGate } from '../../server/clients/index.js';
import { EndpointError, kserveClient, type InferenceClient } from '../endpoint/kserve-client.js';
import { deriveSeed, permutation, seededRandom } from '../random.js';
import type { LabelledImages } from '../world/world.js';
import { newRecord, type ClientRecord, type DetectionRecorder } from './recorder.js';
import type { BenignSettings } from './run.js';

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

/** One scenario's endpoint as its clients see it: the recording detections, the gate's population views, the simulated clock. */
export interface ScenarioServing {
  url: string;
  recorder: DetectionRecorder;
  cohortRecorder: DetectionRecorder;
  gate: Pick<ClientGate, 'populationStatus'>;
  /** Simulated time of the latest request (ms); the endpoint's clock reads it. */
  clock: { now: number };
}

/** What every scenario's benign population is drawn from and compared against. */
export interface BenignTraffic {
  pool: LabelledImages;
  /** The undefended answers to the pool's images, as sent. */
  clean: Float32Array;
  cleanTop1: ArrayLike<number>;
  settings: BenignSettings;
  features: number;
  classes: number;
  seed: number;
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

const VIEWS = ['all', 'young'] as const;

/** The benign clients of one scenario, starting within `spanMs` after `startMs`. */
export class BenignPopulation {
  readonly cost: BenignCost;
  private readonly random: () => number;
  private readonly order: ArrayLike<number>;
  private readonly clients: BenignClient[];
  private readonly inferenceClients: Map<string, InferenceClient>;
  private readonly cohortRecords = new Map<string, ClientRecord>();
  private readonly alarm: Record<string, boolean> = { all: false, young: false };

  constructor(
    private readonly serving: ScenarioServing,
    private readonly traffic: BenignTraffic,
    startMs: number,
    spanMs: number,
  ) {
    const { settings, pool, seed } = traffic;
    this.random = seededRandom(deriveSeed(seed, 'population-benign'));
    this.order = permutation(pool.rows, seededRandom(deriveSeed(seed, 'population-benign-order')));
    let next = 0;
    this.clients = Array.from({ length: settings.clients }, (_, i) => {
      const count = settings.minQueries + Math.floor(this.random() * (settings.maxQueries - settings.minQueries + 1));
      const start = next;
      next += count;
      return {
        key: `benign-${i}`,
        tenant: `benign-org-${i % 10}`,
        start,
        count,
        sent: 0,
        due: startMs + Math.floor(this.random() * spanMs),
        record: newRecord(),
        refused: false,
      };
    });
    this.cost = {
      clients: this.clients.length,
      answers: 0,
      changed: 0,
      top1Changed: 0,
      top1ChangedShare: 0,
      duringAlarm: 0,
      alarmStarts: { all: 0, young: 0 },
      refusedClients: 0,
      escalatedClients: 0,
    };
    this.inferenceClients = new Map(
      this.clients.map((c) => [c.key, kserveClient(serving.url, { headers: { 'x-api-key': c.key, 'x-tenant': c.tenant }, label: c.key })]),
    );
  }

  /** Sends every benign request due up to `until` (simulated ms), earliest first. */
  async runUntil(until: number): Promise<void> {
    const [gapLow, gapHigh] = this.traffic.settings.gapSeconds;
    for (;;) {
      let c: BenignClient | undefined;
      for (const candidate of this.clients) if (!candidate.refused && candidate.sent < candidate.count && (!c || candidate.due < c.due)) c = candidate;
      if (!c || c.due > until) return;
      const { clock } = this.serving;
      clock.now = Math.max(clock.now, c.due);
      this.serving.recorder.next(c.record, clock.now);
      this.serving.cohortRecorder.next(this.cohortRecordOf(c.tenant), clock.now);
      const rows = Math.min(c.count - c.sent, 1 + Math.floor(this.random() * this.traffic.settings.maxRows));
      try {
        await this.send(c, rows);
      } catch (error) {
        if (!(error instanceof EndpointError)) throw error;
        c.refused = true;
        continue;
      }
      c.sent += rows;
      c.due = clock.now + Math.round((gapLow + this.random() * (gapHigh - gapLow)) * 1000);
    }
  }

  /** The cost once every benign request was sent: shares and the clients refused or escalated. */
  finish(): BenignCost {
    const { cost } = this;
    cost.top1ChangedShare = cost.answers ? cost.top1Changed / cost.answers : 0;
    cost.refusedClients = this.clients.filter((c) => c.refused).length;
    cost.escalatedClients = this.clients.filter((c) => c.record.worstAction !== 'default').length;
    return cost;
  }

  private cohortRecordOf(tenant: string): ClientRecord {
    return this.cohortRecords.get(tenant) ?? (this.cohortRecords.set(tenant, newRecord()), this.cohortRecords.get(tenant)!);
  }

  /** One request of `rows` of the client's next images; its answers counted against the undefended ones. */
  private async send(c: BenignClient, rows: number): Promise<void> {
    const { pool, features } = this.traffic;
    const x = new Float32Array(rows * features);
    const rowIds: number[] = [];
    for (let r = 0; r < rows; r++) {
      const id = this.order[(c.start + c.sent + r) % pool.rows];
      rowIds.push(id);
      x.set(pool.x.subarray(id * features, (id + 1) * features), r * features);
    }
    const got = await this.inferenceClients.get(c.key)!.infer(x, rows, features);
    const status = this.serving.gate.populationStatus();
    const during = status !== undefined && (status.views.all.alarm || status.views.young.alarm);
    for (const view of VIEWS) {
      const on = status?.views[view].alarm === true;
      if (on && !this.alarm[view]) this.cost.alarmStarts[view]++;
      this.alarm[view] = on;
    }
    for (let r = 0; r < rows; r++) this.countAnswer(got.data, r, rowIds[r], during);
  }

  /** Row `r` of an answer to pool image `id`: changed at all, changed in top-1, given during an alarm. */
  private countAnswer(data: Float32Array, r: number, id: number, during: boolean): void {
    const { classes, clean, cleanTop1 } = this.traffic;
    let diff = 0;
    let best = 0;
    for (let j = 0; j < classes; j++) {
      diff = Math.max(diff, Math.abs(data[r * classes + j] - clean[id * classes + j]));
      if (data[r * classes + j] > data[r * classes + best]) best = j;
    }
    this.cost.answers++;
    if (during) this.cost.duringAlarm++;
    if (diff > 1e-4) this.cost.changed++;
    if (best !== cleanTop1[id]) this.cost.top1Changed++;
  }
}
