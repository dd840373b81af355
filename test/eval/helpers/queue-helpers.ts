/**
 * For the queue's tests: a real redis-server (optionally with a password), and `msd eval-worker` /
 * `msd eval` started as a user would (`node bin/msd.js …`), each in its own process group so that
 * a kill reaches its child processes too. Everything started here is killed and removed after the
 * test file, whatever happened.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';
import { REDIS_SERVER } from '../../server/helpers/redis-server.js';
import { waitFor } from '../../helpers/wait.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** Runs `cleanup` after the file's tests, before whatever was registered earlier (a coordinator stops before its Redis). */
export function onCleanup(cleanup: () => Promise<void>): void {
  cleanups.push(cleanup);
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface QueueRedis {
  port: number;
  /** redis://[:password@]127.0.0.1:port */
  url: string;
}

/** A CA and a certificate for localhost signed by it (openssl), in `dir`; undefined where openssl is missing. */
export function makeCertificates(dir: string): { ca: string; cert: string; key: string } | undefined {
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  try {
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=msd-test-ca']);
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']);
    writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
    openssl([
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.pem',
      '-days',
      '1',
      '-extfile',
      'ext.cnf',
    ]);
  } catch {
    return undefined;
  }
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

/** A redis-server on a free port, no persistence, stopped after the file's tests; with `tls`, on TLS only (rediss://localhost). */
export async function startQueueRedis(options: { password?: string; tls?: { ca: string; cert: string; key: string } } = {}): Promise<QueueRedis> {
  const dir = mkdtempSync(path.join(tmpdir(), 'msd-queue-redis-'));
  const port = await freePort();
  const { tls } = options;
  const listen = tls
    ? [
        '--port',
        '0',
        '--tls-port',
        String(port),
        '--tls-cert-file',
        tls.cert,
        '--tls-key-file',
        tls.key,
        '--tls-ca-cert-file',
        tls.ca,
        '--tls-auth-clients',
        'no',
      ]
    : ['--port', String(port)];
  const args = [
    ...listen,
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    ...(options.password ? ['--requirepass', options.password] : []),
  ];
  const child = spawn(REDIS_SERVER, args, { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        if (child.exitCode !== null) return resolve(false);
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.end();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      }),
    { what: 'redis-server to listen', timeoutMs: 10_000, intervalMs: 50 },
  );
  return {
    port,
    url: `${tls ? 'rediss' : 'redis'}://${options.password ? `:${encodeURIComponent(options.password)}@` : ''}${tls ? 'localhost' : '127.0.0.1'}:${port}`,
  };
}

/** Live (not zombie) processes of a process group: from /proc on Linux, else whether the group answers signal 0. */
export function groupMembers(pgid: number): number[] {
  if (!existsSync('/proc/self/stat')) {
    try {
      process.kill(-pgid, 0);
      return [pgid];
    } catch {
      return [];
    }
  }
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses, so read after the last ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') members.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return members;
}

export interface CliProcess {
  child: ChildProcess;
  output(): string;
  /** Lines of stderr and stdout so far matching `pattern`. */
  lines(pattern: RegExp): string[];
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Kills the process and its children (its process group). */
  kill(signal?: NodeJS.Signals): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node bin/msd.js ARGS` in its own process group, output collected. */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const child = spawn(process.execPath, [path.join(root, 'bin', 'msd.js'), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c));
  child.stderr!.on('data', (c: Buffer) => (output += c));
  // Its output may still be in the pipes at 'exit': resolved at 'close', or a second after 'exit' when
  // a process of its group still holds them.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
    child.once('exit', (code, signal) => void setTimeout(() => resolve({ code, signal }), 1_000).unref());
  });
  const groupAlive = () => groupMembers(child.pid!).length > 0;
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // already gone
    }
    await exited;
    // The group is empty once its last child has gone too.
    if (signal === 'SIGKILL') await waitFor(() => !groupAlive(), { what: `process group ${child.pid} to be empty`, timeoutMs: 10_000, intervalMs: 20 });
  };
  cleanups.push(async () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
    await exited;
    await waitFor(() => !groupAlive(), { what: `process group ${child.pid} to be empty`, timeoutMs: 10_000, intervalMs: 20 }).catch(() => {});
  });
  const lines = (pattern: RegExp) => output.split('\n').filter((l) => pattern.test(l));
  return {
    child,
    output: () => output,
    lines,
    waitForLine: (pattern, timeoutMs = 60_000) =>
      waitFor(
        () => {
          if (child.exitCode !== null && !lines(pattern).length)
            throw new Error(`msd ${args[0]} exited with ${child.exitCode} before printing ${pattern}:\n${output}`);
          return lines(pattern)[0];
        },
        { what: `msd ${args[0]} to print ${pattern}`, timeoutMs, intervalMs: 20, detail: () => output.slice(-3000) },
      ),
    kill,
    exited,
  };
}

/** `msd eval-worker --queue URL ARGS` (the URL from MSD_QUEUE_URL when `url` is undefined). */
export function startWorker(url: string | undefined, args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  return startCli(['eval-worker', ...(url ? ['--queue', url] : []), '-q', ...args], env);
}
