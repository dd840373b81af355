/**
 * Structured logs: one line per request (pino-http), carrying the defense's record: which defense,
 * outcome, rows, mean L1 and the defense's latency. No probabilities, no bodies, no credentials.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { pinoHttp, type HttpLogger } from 'pino-http';
import type { RequestOutcome } from './metrics.js';

/** What the serving layer knows about one answer; safe to log (numbers and labels only). */
export interface DefenseRecord {
  defense: string;
  outcome: RequestOutcome;
  rows: number;
  /** Mean L1 distance between the model's and the returned rows; absent when nothing was perturbed. */
  meanL1?: number;
  top1Changed?: number;
  /** Context (surrogate) plus defense time, milliseconds. */
  defenseMs?: number;
  /** The error message the client got, when the outcome is an error. */
  error?: string;
}

// Kept on the response itself (a symbol property), so the record lives and dies with it.
const RECORD = Symbol('msd.defenseRecord');

export function setDefenseRecord(res: object, record: DefenseRecord): void {
  (res as { [RECORD]?: DefenseRecord })[RECORD] = record;
}

export function defenseRecordOf(res: object): DefenseRecord | undefined {
  return (res as { [RECORD]?: DefenseRecord })[RECORD];
}

const REDACTED_HEADERS = ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]', 'res.headers["set-cookie"]'];

/**
 * A child logger that also redacts the named request headers (e.g. the one holding client API keys,
 * when it is not x-api-key), besides the usual credentials.
 */
export function redactingHeaders(logger: Logger, headers: readonly string[]): Logger {
  if (headers.length === 0) return logger;
  const paths = [...REDACTED_HEADERS, ...headers.map((h) => `req.headers[${JSON.stringify(h.toLowerCase())}]`)];
  return logger.child({}, { redact: { paths, censor: '[redacted]' } });
}

export function createLogger(options: LoggerOptions = {}, destination?: DestinationStream): Logger {
  const redact = { paths: REDACTED_HEADERS, censor: '[redacted]' };
  return destination ? pino({ redact, ...options }, destination) : pino({ redact, ...options });
}

/** pino-http middleware whose request line carries the defense record's fields (defense, outcome, rows, meanL1, defenseMs). */
export function createHttpLogger(logger: Logger): HttpLogger<IncomingMessage, ServerResponse> {
  return pinoHttp({
    logger,
    customProps: (_req, res) => {
      const record = defenseRecordOf(res);
      return record ? { ...record } : {};
    },
    customLogLevel: (_req, res, error) => (error || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info'),
  });
}
