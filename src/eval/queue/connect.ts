/** Opening the queue's Redis: checked once up front, so a wrong password or host fails with one clear line. */
import type { ConnectionOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { parseQueueUrl, type QueueConnection } from './redis-url.js';

export class QueueConnectionError extends Error {
  override name = 'QueueConnectionError';
}

/** ioredis options for long-lived clients: BullMQ's workers need commands that wait out a reconnect. */
export function bullConnection(connection: QueueConnection): ConnectionOptions {
  // BullMQ declares its own copy of ioredis's option type; the fields are ioredis's.
  return { ...connection.options, maxRetriesPerRequest: null } as ConnectionOptions;
}

/** Connects, authenticates and pings once; throws QueueConnectionError with the redacted address on failure. */
export async function probeRedis(url: string, name = 'msd-eval-probe'): Promise<QueueConnection> {
  const connection = parseQueueUrl(url);
  const { Redis } = await import('ioredis');
  const probe = new Redis({
    ...connection.options,
    connectionName: name,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    connectTimeout: 10_000,
  });
  // ioredis reports the cause (WRONGPASS, ECONNREFUSED, a certificate error) as an event, then rejects with "Connection is closed".
  let cause: Error | undefined;
  probe.on('error', (error: Error) => {
    cause ??= error;
  });
  try {
    await probe.connect();
    await probe.ping();
  } catch (error) {
    probe.disconnect();
    const message = (cause ?? (error as Error)).message;
    const hint = /NOAUTH|WRONGPASS|invalid password|invalid username/i.test(message) ? ' (the password in the address is missing or wrong)' : '';
    throw new QueueConnectionError(`cannot reach the queue at ${connection.redacted}: ${message}${hint}`);
  }
  probe.disconnect();
  return connection;
}

/** A long-lived client (commands wait out a reconnect), once a probe has connected. */
export async function openRedis(url: string, name: string): Promise<{ redis: Redis; connection: QueueConnection }> {
  const connection = await probeRedis(url, name);
  const { Redis } = await import('ioredis');
  const redis = new Redis({ ...connection.options, maxRetriesPerRequest: null, connectionName: name });
  redis.on('error', () => {});
  return { redis, connection };
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
