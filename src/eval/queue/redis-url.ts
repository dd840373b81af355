/**
 * The queue's Redis address: `redis://[user][:password]@host[:port][/db]`, or `rediss://` for TLS.
 * Parsed here rather than handed to ioredis as a string, so a mistake is reported with what to
 * write instead, and the password never reaches a log line (`redacted`).
 *
 * TLS verifies the server's certificate against Node's CA store; a private CA is added with
 * NODE_EXTRA_CA_CERTS=/path/ca.pem (Node's own variable), never by turning verification off.
 */
import { isIP } from 'node:net';
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
  if (!/^\d*$/.test(path))
    throw new QueueUrlError(
      path.includes('@')
        ? 'the queue address has a "/" before its "@": a password (or user) with / ? # or @ in it must be percent-encoded (%2F, %3F, %23, %40)'
        : `the queue address's path is the database number (/0, /1, …), got "/${path}"`,
    );
  const db = path === '' ? 0 : Number(path);
  if (parsed.search || parsed.hash)
    throw new QueueUrlError('the queue address takes no query or fragment; TLS is rediss://, and a private CA goes in NODE_EXTRA_CA_CERTS');
  const username = decodeCredential(parsed.username, 'user');
  const password = decodeCredential(parsed.password, 'password');
  // IPv6 literals come back bracketed from URL; the socket wants them bare.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  const options: RedisOptions = {
    host,
    port,
    db,
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    // The certificate is checked against the host written in the address (an IP address is checked
    // as such: TLS's server name indication takes names only).
    ...(tls ? { tls: isIP(host) ? {} : { servername: host } } : {}),
  };
  const auth = username || password ? `${username}${password ? ':***' : ''}@` : '';
  return { options, tls, redacted: `${parsed.protocol}//${auth}${parsed.host}${db ? `/${db}` : ''}` };
}

/** The user or password as written, percent-escapes decoded; a stray % is a mistake said in words (and never shown). */
function decodeCredential(text: string, what: 'user' | 'password'): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new QueueUrlError(`the queue address's ${what} has a % that starts no percent-escape: write % itself as %25`);
  }
}

/** A string that is not a URL, with anything before an "@" (a password, perhaps) hidden. */
function redactLoose(url: string): string {
  return url.includes('@') ? `***@${url.slice(url.lastIndexOf('@') + 1)}` : url;
}
