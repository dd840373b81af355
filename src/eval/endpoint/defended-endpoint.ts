/**
 * The victim as the attacker meets it: the serving layer's demo app (KServe V2 route, the real
 * `poisonPredictions` middleware, /metrics) around the victim model, listening on 127.0.0.1.
 * Every answer the evaluation measures went through the code path a deployment uses.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Defense } from '../../defenses/index.js';
import type { ContextProviders, LayersModel } from '../../models/index.js';
import type { ClientsOptions } from '../../server/clients/options.js';
import { buildDemoApp, DEMO_INPUT_NAME } from '../../demo/app.js';
import type { PoisonPredictionsMiddleware } from '../../server/middleware.js';
import { surrogateContext } from '../../server/surrogate-context.js';

export interface EndpointOptions {
  victim: LayersModel;
  defense: Defense;
  /** Surrogate and misinformation model for the defenses that need them. */
  providers: ContextProviders;
  modelName?: string;
  /** Escalation tiers and per-client detection (the detection evaluation). */
  tiers?: Readonly<Record<string, string>>;
  clients?: ClientsOptions;
}

export interface DefendedEndpoint {
  /** The inference URL: POST a KServe V2 request here. */
  url: string;
  metricsUrl: string;
  /** The middleware instance; its metrics hold the serving counters and the evaluation gauges. */
  guard: PoisonPredictionsMiddleware;
  close(): Promise<void>;
}

/** Name of the input tensor the endpoint reads. */
export const INPUT_NAME = DEMO_INPUT_NAME;

export async function startDefendedEndpoint(options: EndpointOptions): Promise<DefendedEndpoint> {
  const modelName = options.modelName ?? 'victim';
  const { app, guard } = buildDemoApp({
    model: options.victim,
    modelName,
    defense: options.defense,
    context: options.defense.needs.length || options.tiers ? surrogateContext(options.providers) : undefined,
    tiers: options.tiers,
    clients: options.clients,
  });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  // The attacker shares this process and blocks it while its knockoff trains between queries; the idle
  // keep-alive timer then fires just as the next request reuses the socket (ECONNRESET). Loopback, one
  // client, closed with the endpoint: no idle timeout.
  server.keepAliveTimeout = 0;
  const { port } = server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}`;
  return {
    url: `${base}/v2/models/${modelName}/infer`,
    metricsUrl: `${base}/metrics`,
    guard,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
