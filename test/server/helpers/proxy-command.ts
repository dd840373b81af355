/**
 * Starts `msd proxy ARGS --port 0` as a user would; resolves once it listens. Every wait has a
 * deadline, and a proxy still running after the test file (a test that failed midway) is killed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { within } from '../../helpers/wait.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const started: ChildProcess[] = [];
after(() => {
  for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

export interface ProxyCommand {
  url: string;
  /** Resolves with stderr once it matches (start-up lines come after the listening line); fails after `timeoutMs` (60 s). */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stdout(): string;
  /** SIGTERM (or the given signal); resolves with the exit code, or fails if it has not exited within 60 s. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startProxyCommand(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ProxyCommand> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'proxy', ...args, '--port', '0'], {
    cwd: root,
    env: { ...process.env, ...env },
  });
  started.push(child);
  let stderr = '';
  let stdout = '';
  const waiters: { pattern: RegExp; resolve: (s: string) => void }[] = [];
  child.stdout.on('data', (c: Buffer) => (stdout += c));
  child.stderr.on('data', (c: Buffer) => {
    stderr += c;
    for (const w of waiters.splice(0)) w.pattern.test(stderr) ? w.resolve(stderr) : waiters.push(w);
  });
  const waitFor = (pattern: RegExp, timeoutMs = 60_000): Promise<string> =>
    pattern.test(stderr)
      ? Promise.resolve(stderr)
      : within(
          new Promise((resolve, reject) => {
            waiters.push({ pattern, resolve });
            child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
          }),
          { what: `msd proxy to print ${pattern}`, timeoutMs, detail: () => stderr.slice(-3000) },
        );
  // Start-up may load models and calibrate (HODA): a generous deadline.
  const listening = await waitFor(/proxy: (http:\/\/127\.0\.0\.1:\d+)/, 180_000);
  return {
    url: /proxy: (http:\/\/127\.0\.0\.1:\d+)/.exec(listening)![1],
    waitFor,
    stdout: () => stdout,
    stop: (signal = 'SIGTERM') =>
      within(
        new Promise((resolve) => {
          if (child.exitCode !== null) return resolve(child.exitCode);
          child.removeAllListeners('exit');
          child.once('exit', resolve);
          child.kill(signal);
        }),
        { what: `msd proxy to exit on ${signal}`, timeoutMs: 60_000, detail: () => stderr.slice(-3000) },
      ),
  };
}
