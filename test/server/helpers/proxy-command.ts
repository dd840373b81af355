/** Starts `msd proxy ARGS --port 0` as a user would; resolves once it listens. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));

export interface ProxyCommand {
  url: string;
  /** Resolves with stderr once it matches (start-up lines come after the listening line). */
  waitFor(pattern: RegExp): Promise<string>;
  stdout(): string;
  /** SIGTERM (or the given signal); resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startProxyCommand(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ProxyCommand> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'proxy', ...args, '--port', '0'], {
    cwd: root,
    env: { ...process.env, ...env },
  });
  let stderr = '';
  let stdout = '';
  const waiters: { pattern: RegExp; resolve: (s: string) => void }[] = [];
  child.stdout.on('data', (c: Buffer) => (stdout += c));
  child.stderr.on('data', (c: Buffer) => {
    stderr += c;
    for (const w of waiters.splice(0)) w.pattern.test(stderr) ? w.resolve(stderr) : waiters.push(w);
  });
  const waitFor = (pattern: RegExp): Promise<string> =>
    pattern.test(stderr)
      ? Promise.resolve(stderr)
      : new Promise((resolve, reject) => {
          waiters.push({ pattern, resolve });
          child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
        });
  const listening = await waitFor(/proxy: (http:\/\/127\.0\.0\.1:\d+)/);
  return {
    url: /proxy: (http:\/\/127\.0\.0\.1:\d+)/.exec(listening)![1],
    waitFor,
    stdout: () => stdout,
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve(child.exitCode);
        child.removeAllListeners('exit');
        child.once('exit', resolve);
        child.kill(signal);
      }),
  };
}
