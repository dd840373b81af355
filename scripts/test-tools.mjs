#!/usr/bin/env node
// The system programs the test suite runs for real: redis-server (the Redis store's tests), promtool
// (the alerting rules) and openssl (the Redis queue's TLS test). `npm test` calls this first: a program that is missing is installed with
// Debian's apt-get where this user may (root, or sudo without a password); elsewhere it stops with what
// to install. So a newcomer and CI get the same suite, every test running.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const TOOLS = [
  {
    program: 'redis-server',
    path: process.env.REDIS_SERVER,
    debian: 'redis-server',
    other: "Redis (brew install redis, or your distribution's redis package)",
  },
  {
    program: 'promtool',
    path: undefined,
    debian: 'prometheus',
    other: "Prometheus's promtool (brew install prometheus, or a release archive's promtool on the PATH)",
  },
  { program: 'openssl', path: undefined, debian: 'openssl', other: 'OpenSSL (it makes the certificates of the Redis queue TLS test)' },
];

const found = (tool) => (tool.path ? existsSync(tool.path) : spawnSync('sh', ['-c', `command -v ${tool.program}`], { stdio: 'ignore' }).status === 0);
const missing = TOOLS.filter((tool) => !found(tool));
if (missing.length === 0) process.exit(0);

const names = missing.map((t) => t.program).join(' and ');
const canRun = (cmd, args) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const root = process.getuid?.() === 0;
const sudo = root ? [] : canRun('sudo', ['-n', 'true']) ? ['sudo', '-n'] : null;
if (!canRun('sh', ['-c', 'command -v apt-get']) || sudo === null) {
  process.stderr.write(
    `The tests need ${names}, which ${missing.length > 1 ? 'are' : 'is'} not installed. Install:\n${missing.map((t) => `  - ${t.other} (Debian/Ubuntu: apt-get install ${t.debian})`).join('\n')}\n`,
  );
  process.exit(1);
}

const apt = (args) => {
  const [cmd, ...rest] = [...sudo, 'apt-get', ...args];
  const result = spawnSync(cmd, rest, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  return result.status === 0;
};
process.stderr.write(`test tools: installing ${missing.map((t) => t.debian).join(', ')} with apt-get (for ${names})\n`);
if (!apt(['update', '-qq']) || !apt(['install', '-y', '-qq', '--no-install-recommends', ...missing.map((t) => t.debian)])) {
  process.stderr.write(`test tools: apt-get could not install ${missing.map((t) => t.debian).join(' ')}; install ${names} by hand and run the tests again\n`);
  process.exit(1);
}
const still = missing.filter((tool) => !found(tool));
if (still.length > 0) {
  process.stderr.write(`test tools: ${still.map((t) => t.program).join(', ')} still not found after installing\n`);
  process.exit(1);
}
