/**
 * A small progress bar for long work, written to stderr. On a terminal it redraws one line;
 * elsewhere (CI, pipes) it prints a line at most every few seconds so logs stay short.
 */
export interface Progress {
  /** Advance to `done` of `total`, with a short status such as "loss 0.31 acc 0.93". */
  update(done: number, status?: string): void;
  /** Final line; the bar is not used after this. */
  finish(status?: string): void;
}

export interface ProgressOptions {
  label: string;
  total: number;
  stream?: NodeJS.WriteStream;
  /** Minimum milliseconds between lines when not on a terminal. */
  plainIntervalMs?: number;
  /** Print nothing (e.g. --quiet). */
  silent?: boolean;
}

export function createProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stderr;
  const tty = Boolean(stream.isTTY);
  const interval = options.plainIntervalMs ?? 5000;
  const started = Date.now();
  let lastPlain = 0;
  let lastDone = 0;

  const render = (done: number, status: string | undefined, final: boolean): void => {
    if (options.silent) return;
    const total = Math.max(1, options.total);
    const fraction = Math.min(1, done / total);
    const elapsed = (Date.now() - started) / 1000;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const eta = rate > 0 && !final ? ` eta ${formatSeconds((total - done) / rate)}` : '';
    const tail = `${done}/${options.total} ${formatSeconds(elapsed)}${eta}${status ? ` ${status}` : ''}`;
    if (tty) {
      const width = 24;
      const filled = Math.round(fraction * width);
      const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
      stream.write(`\r\x1b[2K${options.label} [${bar}] ${tail}${final ? '\n' : ''}`);
      return;
    }
    const now = Date.now();
    if (final || now - lastPlain >= interval) {
      lastPlain = now;
      stream.write(`${options.label} ${(fraction * 100).toFixed(0)}% ${tail}\n`);
    }
  };

  return {
    update(done, status) {
      lastDone = done;
      render(done, status, false);
    },
    finish(status) {
      render(Math.max(lastDone, options.total), status, true);
    },
  };
}

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const m = Math.floor(seconds / 60);
  return `${m}m${Math.round(seconds - m * 60)
    .toString()
    .padStart(2, '0')}s`;
}
