/**
 * A client gate for the tests of detection above the client: API-key identities, per-client
 * detectors that stay silent on short histories (no PRADA, no budget; OOD needs 50 queries), no
 * new-identity rule, a pino line collector, a settable clock, and `ask` for one admitted and
 * observed request (what `observe` returns: undefined, or the tier that answers).
 */
import type { IncomingMessage } from 'node:http';
import { parseDefense, type Defense } from '../../../src/defenses/index.js';
import { createClientDetection } from '../../../src/detection/index.js';
import { createClientGate } from '../../../src/server/clients/gate.js';
import type { ClientsOptions } from '../../../src/server/clients/options.js';
import { createLogger } from '../../../src/server/logger.js';
import { createServingMetrics } from '../../../src/server/metrics.js';
import { lineCollector } from './fixtures.js';

/** The default defense the gate is given (what a request without an override gets). */
export const defaultDefense = parseDefense('rounding:decimals=2');
export const confident = { rows: 1, cols: 2, data: Float32Array.of(0.95, 0.05) };
export const unsure = { rows: 1, cols: 2, data: Float32Array.of(0.55, 0.45) };

export type Rows = { rows: number; cols: number; data: Float32Array };

export const requestFrom = (key: string, headers: Record<string, string> = {}, address = '198.51.100.7') =>
  ({ headers: { 'x-api-key': key, ...headers }, socket: { remoteAddress: address } }) as unknown as IncomingMessage;

export function aboveGate(extra: Partial<ClientsOptions>, settings: { tiers: ReadonlyMap<string, Defense>; start?: number }) {
  let time = settings.start ?? 1_800_000_000_000;
  const logs = lineCollector();
  const metrics = createServingMetrics();
  const detection = createClientDetection({ prada: { enabled: false }, budget: false, policy: { steps: [...settings.tiers.keys()] } });
  const gate = createClientGate(
    { identity: 'header:x-api-key', detection, newClients: false, ...extra },
    { defense: defaultDefense, tiers: settings.tiers, metrics, logger: createLogger({}, logs.stream), now: () => time },
  );
  const ask = async (key: string, probs: Rows = confident, headers: Record<string, string> = {}, inputs?: Rows) =>
    gate.observe(await gate.admit(requestFrom(key, headers)), probs, inputs, defaultDefense);
  return { gate, logs, metrics, ask, advance: (ms: number) => (time += ms), now: () => time };
}
