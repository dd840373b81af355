/** Child processes for the server benchmarks: started with tsx, ready when they send {type: 'ready', url}. */
import { fork, type ChildProcess } from 'node:child_process';

export interface Started {
  process: ChildProcess;
  url: string;
}

/** Forks `script` with `args`; resolves with its URL once it reports ready, rejects if it exits first. */
export function startChild(script: string, args: string[], role: string, execArgv: string[] = []): Promise<Started> {
  return new Promise((resolve, reject) => {
    const proc = fork(script, args, { execArgv: ['--import', 'tsx', ...execArgv], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`${role} exited with ${code}`)));
    proc.on('message', (message: { type: string; url?: string }) => {
      if (message.type === 'ready') resolve({ process: proc, url: message.url! });
    });
  });
}

export function stopChild(started: Started): void {
  started.process.removeAllListeners('exit');
  started.process.kill('SIGTERM');
}
