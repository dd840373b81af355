/** A suite's stub upstream and real redis-server, started before its tests; they and every proxy it tracks are closed after. */
import { after, before } from 'node:test';
import type { RunningProxy } from '../../../src/server/proxy.js';
import { startRedis, type TestRedis } from './redis-server.js';
import { startStubUpstream, type StubUpstream } from './stub-upstream.js';

export interface StubAndRedis {
  readonly upstream: StubUpstream;
  readonly redis: TestRedis;
  /** Proxies to close after the suite. */
  readonly running: RunningProxy[];
}

/** Call inside a describe(). */
export function useStubAndRedis(): StubAndRedis {
  let upstream: StubUpstream | undefined;
  let redis: TestRedis | undefined;
  const running: RunningProxy[] = [];
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
    redis = await startRedis();
  });
  after(async () => {
    for (const proxy of running) await proxy.close();
    await upstream?.close();
    await redis?.stop();
  });
  return {
    get upstream() {
      if (!upstream) throw new Error('the stub upstream starts in before()');
      return upstream;
    },
    get redis() {
      if (!redis) throw new Error('redis-server starts in before()');
      return redis;
    },
    running,
  };
}
