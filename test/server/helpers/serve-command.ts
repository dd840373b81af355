/**
 * Starts `msd serve ARGS --port 0` as a user would; resolves with the curl line it prints once it
 * listens. Every wait has a deadline, and a server still running after the test file is killed.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { within } from '../../helpers/wait.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const started: ChildProcessWithoutNullStreams[] = [];
after(() => {
  for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

export interface ServeCommand {
  child: ChildProcessWithoutNullStreams;
  /** The `curl …` line the command printed. */
  curl: string;
  stderr(): string;
  /** SIGTERM; resolves with the exit code, or fails if it has not exited within 60 s. */
  stop(): Promise<number | null>;
}

export async function startServeCommand(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<ServeCommand> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', ...args, '--port', '0'], { cwd: root, env });
  started.push(child);
  let stdout = '';
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  const curl = await within(
    new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (c: Buffer) => {
        stdout += c;
        const line = stdout.split('\n').find((l) => l.trim().startsWith('curl '));
        if (line) resolve(line.trim());
      });
      void exited.then((code) => reject(new Error(`exited ${code}: ${stderr}`)));
    }),
    { what: 'msd serve to print its curl line', timeoutMs: 120_000, detail: () => stderr.slice(-3000) },
  );
  return {
    child,
    curl,
    stderr: () => stderr,
    stop: () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return within(exited, { what: 'msd serve to exit on SIGTERM', timeoutMs: 60_000, detail: () => stderr.slice(-3000) });
    },
  };
}
