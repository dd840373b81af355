/**
 * The queue's Redis address: `redis://[user][:password]@host[:port][/db]`, or `rediss://` for TLS.
 * Parsed here rather than handed to ioredis as a string, so a mistake is reported with what to
 * write instead, and the password never reaches a log line (`redacted`).
 *
 * TLS verifies the server's certificate against Node's CA store; a private CA is added with
 * NODE_EXTRA_CA_CERTS=/path/ca.pem (Node's own variable), never by turning verification off.
 */
import type { RedisOptions } from 'ioredis';

export class QueueUrlError extends Error {
  override name = 'QueueUrlError';
}

export interface QueueConnection {
  /** ioredis options (BullMQ passes them on). */
  options: RedisOptions;
  /** The address without its password, for logs: `rediss://user:***@host:6380/2`. */
  redacted: string;
  tls: boolean;
}

const EXAMPLE = 'redis://host:6379, redis://:password@host:6379/0 or rediss://user:password@host:6380';

export function parseQueueUrl(url: string): QueueConnection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new QueueUrlError(`the queue address must be a Redis URL such as ${EXAMPLE}, got "${redactLoose(url)}"`);
  }
  const tls = parsed.protocol === 'rediss:';
  if (!tls && parsed.protocol !== 'redis:')
    throw new QueueUrlError(`the queue address must start with redis:// or rediss:// (TLS), got "${parsed.protocol}//…"`);
  if (!parsed.hostname) throw new QueueUrlError(`the queue address names no host; write e.g. ${EXAMPLE}`);
  const port = parsed.port === '' ? 6379 : Number(parsed.port);
  const path = parsed.pathname.replace(/^\/+/, '');
  if (!/^\d*$/.test(path)) throw new QueueUrlError(`the queue address's path is the database number (/0, /1, …), got "/${path}"`);
  const db = path === '' ? 0 : Number(path);
  if (parsed.search || parsed.hash)
    throw new QueueUrlError('the queue address takes no query or fragment; TLS is rediss://, and a private CA goes in NODE_EXTRA_CA_CERTS');
  const username = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  // IPv6 literals come back bracketed from URL; the socket wants them bare.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  const options: RedisOptions = {
    host,
    port,
    db,
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    // The certificate is checked against the host name written in the address.
    ...(tls ? { tls: { servername: host } } : {}),
  };
  const auth = username || password ? `${username}${password ? ':***' : ''}@` : '';
  return { options, tls, redacted: `${parsed.protocol}//${auth}${parsed.host}${db ? `/${db}` : ''}` };
}

/** A string that is not a URL, with anything before an "@" (a password, perhaps) hidden. */
function redactLoose(url: string): string {
  return url.includes('@') ? `***@${url.slice(url.lastIndexOf('@') + 1)}` : url;
}
