/** Starts `msd serve ARGS --port 0` as a user would; resolves with the curl line it prints once it listens. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));

export interface ServeCommand {
  child: ChildProcessWithoutNullStreams;
  /** The `curl …` line the command printed. */
  curl: string;
  stderr(): string;
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number | null>;
}

export async function startServeCommand(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<ServeCommand> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', ...args, '--port', '0'], { cwd: root, env });
  let stdout = '';
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  const curl = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      stdout += c;
      const line = stdout.split('\n').find((l) => l.trim().startsWith('curl '));
      if (line) resolve(line.trim());
    });
    void exited.then((code) => reject(new Error(`exited ${code}: ${stderr}`)));
  });
  return {
    child,
    curl,
    stderr: () => stderr,
    stop: () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}
