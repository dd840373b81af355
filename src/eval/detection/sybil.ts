/**
 * Thieves with many identities, for the detection evaluation: any attacker's query stream (Knockoff
 * random or adaptive, JBDA, ...) sent through an InferenceClient that spreads its requests over N
 * identities, optionally dilutes every request with in-distribution queries (share r of each
 * identity's queries), keeps all identities in one cohort or none, and paces itself slowly enough that
 * no identity ever fills a per-client window or budget. The attacker itself is unchanged: it sees one
 * client and gets back the answers to its own rows.
 *
 * Scenario specs: `ATTACK:IDENTITIES[:cohort][:dilute=R][:slow][:perclient]`, e.g. `random:200`,
 * `random:200:cohort`, `adaptive:100:dilute=0.5`, `random:20:slow`; `perclient` runs the same thief
 * with detection above the client off (per-client detection only), for comparison. `benign` runs the
 * benign clients alone (no thief): the false alarms and the cost of detection above the client.
 */
import type { ProbBatch } from '../../defenses/index.js';
import { QUERY_POLICIES, type PolicyName } from '../config.js';
import { EndpointError, kserveClient, type InferenceClient } from '../endpoint/kserve-client.js';

export interface ThiefScenario {
  /** As written, e.g. "random:200:dilute=0.5". */
  readonly name: string;
  /** "none" for the benign-only scenario. */
  readonly policy: PolicyName | 'none';
  readonly identities: number;
  /** All identities in one cohort (one tenant); otherwise none has a cohort key. */
  readonly cohort: boolean;
  /** Share of each identity's queries that are in-distribution cover (0: none). */
  readonly dilution: number;
  /** Paced so that no identity sends more than `slowPerHour` queries an hour. */
  readonly slow: boolean;
  /** Detection above the client off: per-client detection only. */
  readonly perClient: boolean;
}

/** The measured settings. */
export const TARGET_SCENARIOS = ['benign', 'random:200', 'random:200:cohort', 'random:200:dilute=0.5'] as const;

/** Every attacker family at N = 10, 100, 1000; dilution alone and with Sybil; the slow thief. */
export const ALL_SCENARIOS = [
  'benign',
  'random:200:perclient',
  ...['random', 'adaptive', 'jbda'].flatMap((policy) => [10, 100, 1000].map((n) => `${policy}:${n}`)),
  'random:200',
  'random:200:cohort',
  'random:1:dilute=0.5',
  'random:1:dilute=0.8',
  'random:200:dilute=0.5',
  'random:200:dilute=0.8',
  'random:20:slow',
  'random:200:slow',
] as const;

export class ScenarioError extends Error {
  override name = 'ScenarioError';
}

/** A comma-separated list of specs, where "target" and "all" stand for their sets; each scenario once, in order. */
export function parseScenarios(text: string): ThiefScenario[] {
  const specs = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .flatMap((s) => (s === 'target' ? [...TARGET_SCENARIOS] : s === 'all' ? [...ALL_SCENARIOS] : [s]));
  if (specs.length === 0) throw new ScenarioError('no thief scenario given: write "target", "all" or specs such as "random:200,random:200:cohort"');
  return [...new Set(specs)].map(parseScenario);
}

export function parseScenario(spec: string): ThiefScenario {
  if (spec === 'benign') return { name: spec, policy: 'none', identities: 0, cohort: false, dilution: 0, slow: false, perClient: false };
  const [policy, count, ...mods] = spec.split(':');
  const hint = `write "benign" or ATTACK:IDENTITIES[:cohort][:dilute=R][:slow][:perclient] with ATTACK one of ${QUERY_POLICIES.join(', ')}, e.g. "random:200:dilute=0.5"`;
  if (!QUERY_POLICIES.includes(policy as PolicyName)) throw new ScenarioError(`thief scenario "${spec}": unknown attacker "${policy}"; ${hint}`);
  const identities = Number(count);
  if (!Number.isInteger(identities) || identities < 1 || identities > 100_000)
    throw new ScenarioError(`thief scenario "${spec}": identities must be an integer from 1 to 100000; ${hint}`);
  let cohort = false;
  let dilution = 0;
  let slow = false;
  let perClient = false;
  for (const mod of mods) {
    if (mod === 'cohort') cohort = true;
    else if (mod === 'slow') slow = true;
    else if (mod === 'perclient') perClient = true;
    else if (/^dilute=/.test(mod)) {
      dilution = Number(mod.slice(7));
      if (!(dilution >= 0 && dilution < 1))
        throw new ScenarioError(`thief scenario "${spec}": dilute=R needs 0 ≤ R < 1 (the in-distribution share), e.g. dilute=0.5`);
    } else throw new ScenarioError(`thief scenario "${spec}": unknown modifier "${mod}"; ${hint}`);
  }
  return { name: spec, policy: policy as PolicyName, identities, cohort, dilution, slow, perClient };
}

/** What the thief got, per answer of its own (attack) rows, in the order it got them. */
export interface ThiefTally {
  attack: number;
  cover: number;
  clean: number;
  defended: number;
  refused: number;
  /** Clean answers before the first defended or refused one. */
  cleanBeforeAction: number;
  /** Identities used (retired ones replaced by fresh ones). */
  identitiesUsed: number;
  requests: number;
}

export interface ThiefClientOptions {
  url: string;
  scenario: ThiefScenario;
  features: number;
  classes: number;
  /** In-distribution images for dilution (drawn in order, wrapping around). */
  cover?: { x: Float32Array; rows: number };
  /** The victim's undefended answers, for measurement only (never given to the attacker). */
  clean(x: Float32Array, rows: number): ProbBatch;
  /** Before each request: the simulated time of this request (the caller runs the benign traffic due before it). */
  before(key: string, time: number): Promise<void>;
  /** After each answered (or refused) request, with the attack rows answered so far. */
  after(tally: ThiefTally): void;
  /** Simulated ms between two of the thief's requests. */
  gapMs: number;
  startMs: number;
  /** Key prefix of the thief's identities. */
  keyPrefix: string;
  random: () => number;
}

/** Rows that tell the knockoff nothing: what the thief keeps for a refused query (filtered out before training). */
export function refusedAnswer(classes: number): Float32Array {
  return new Float32Array(classes).fill(1 / classes);
}

export function isRefusedRow(data: Float32Array, offset: number, classes: number): boolean {
  const u = Math.fround(1 / classes);
  for (let j = 0; j < classes; j++) if (data[offset + j] !== u) return false;
  return true;
}

const statusOf = (error: EndpointError): number => Number(/answered (\d{3})/.exec(error.message)?.[1] ?? 0);

/** The thief's client: the attacker's requests spread over identities, diluted, paced, measured. */
export function thiefClient(options: ThiefClientOptions): InferenceClient & { tally: ThiefTally } {
  const { scenario, features, classes } = options;
  const slots = Array.from({ length: scenario.identities }, (_, i) => `${options.keyPrefix}${i}`);
  let fresh = scenario.identities;
  const clients = new Map<string, InferenceClient>();
  const clientFor = (key: string): InferenceClient => {
    let client = clients.get(key);
    if (!client) {
      const headers: Record<string, string> = { 'x-api-key': key };
      if (scenario.cohort) headers['x-tenant'] = `${options.keyPrefix}org`;
      client = kserveClient(options.url, { headers, label: key });
      clients.set(key, client);
    }
    return client;
  };
  const tally: ThiefTally = { attack: 0, cover: 0, clean: 0, defended: 0, refused: 0, cleanBeforeAction: 0, identitiesUsed: scenario.identities, requests: 0 };
  let acted = false;
  let coverAt = 0;
  let coverCarry = 0;
  let time = options.startMs;
  let turn = 0;
  const coverShare = scenario.dilution > 0 ? scenario.dilution / (1 - scenario.dilution) : 0;

  return {
    tally,
    get requests() {
      return tally.requests;
    },
    async infer(x, rows, width) {
      if (width !== features) throw new RangeError(`the thief's rows are ${width} wide, the victim takes ${features}`);
      // Cover rows: r / (1 − r) per attack row, carried over between requests.
      coverCarry += rows * coverShare;
      const coverRows = options.cover ? Math.floor(coverCarry) : 0;
      coverCarry -= coverRows;
      const total = rows + coverRows;
      const batch = new Float32Array(total * features);
      // Attack rows at random positions among the cover rows.
      const slot = Array.from({ length: total }, (_, i) => i);
      for (let i = total - 1; i > 0; i--) {
        const j = Math.floor(options.random() * (i + 1));
        [slot[i], slot[j]] = [slot[j], slot[i]];
      }
      for (let r = 0; r < rows; r++) batch.set(x.subarray(r * features, (r + 1) * features), slot[r] * features);
      for (let c = 0; c < coverRows; c++) {
        const from = coverAt++ % options.cover!.rows;
        batch.set(options.cover!.x.subarray(from * features, (from + 1) * features), slot[rows + c] * features);
      }
      const index = turn++ % slots.length;
      let answer: ProbBatch | undefined;
      for (let attempt = 0; attempt < 3 && !answer; attempt++) {
        const key = slots[index];
        await options.before(key, time);
        tally.requests++;
        try {
          answer = await clientFor(key).infer(batch, total, features);
        } catch (error) {
          if (!(error instanceof EndpointError) || ![403, 429].includes(statusOf(error))) throw error;
          // Refused or throttled: the thief drops the identity and takes a fresh one.
          clients.delete(key);
          slots[index] = `${options.keyPrefix}${fresh++}`;
          tally.identitiesUsed++;
          time += 1;
        }
      }
      time += options.gapMs;
      const out = new Float32Array(rows * classes);
      const clean = options.clean(x, rows);
      tally.attack += rows;
      tally.cover += coverRows;
      for (let r = 0; r < rows; r++) {
        if (!answer) {
          out.set(refusedAnswer(classes), r * classes);
          tally.refused++;
          acted = true;
          continue;
        }
        const got = answer.data.subarray(slot[r] * classes, (slot[r] + 1) * classes);
        out.set(got, r * classes);
        let diff = 0;
        for (let j = 0; j < classes; j++) diff = Math.max(diff, Math.abs(got[j] - clean.data[r * classes + j]));
        if (diff > 1e-4) {
          tally.defended++;
          acted = true;
        } else {
          tally.clean++;
          if (!acted) tally.cleanBeforeAction++;
        }
      }
      options.after(tally);
      return { rows, cols: classes, data: out };
    },
  };
}
