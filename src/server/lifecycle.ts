import type { IncomingMessage, Server, ServerResponse } from 'node:http';

/** Clean shutdown for the long-running commands: the first SIGINT/SIGTERM closes, a second one exits at once. */
export function closeOnSignals(close: () => Promise<void>, log: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): void {
  let closing = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (closing) process.exit(130);
    closing = true;
    log(`${signal}: closing`);
    close().then(
      () => process.exit(0),
      (error: Error) => {
        log(`error while closing: ${error.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

export interface DrainingServer {
  /** Requests being answered now. */
  readonly inFlight: number;
  /**
   * Graceful close: stops listening, answers for a moment (250 ms) what reached it just before,
   * closes the idle connections, lets the requests in flight finish for up to `deadlineMs` (default
   * 10 s; their answers carry `connection: close`), then closes every connection.
   */
  close(deadlineMs?: number): Promise<void>;
}

/** How long a closing server goes on answering connections it accepted just before it stopped listening. */
const SETTLE_MS = 250;

/**
 * Tracks the requests of an HTTP server (install it right after listen) so that it can be closed
 * without cutting the answers in flight, as the proxy closes (see startDefenseProxy).
 */
export function drainingServer(server: Server): DrainingServer {
  let inFlight = 0;
  let stopping = false;
  const onIdle: (() => void)[] = [];
  // First among the request listeners: the header is set before the application can answer.
  server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => {
    inFlight += 1;
    if (stopping) res.setHeader('connection', 'close');
    res.once('close', () => {
      inFlight -= 1;
      if (inFlight === 0) for (const resolve of onIdle.splice(0)) resolve();
    });
  });
  const idle = (): Promise<void> => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => onIdle.push(resolve)));
  return {
    get inFlight() {
      return inFlight;
    },
    close: async (deadlineMs = 10_000) => {
      // Stop accepting first; connections accepted just before may not have sent their request yet.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      stopping = true;
      await new Promise((resolve) => setTimeout(resolve, Math.min(SETTLE_MS, deadlineMs)));
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs)))]);
      clearTimeout(timer);
      server.closeAllConnections();
      await closed;
    },
  };
}
