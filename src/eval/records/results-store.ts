/**
 * The resumable store of finished runs: one JSON line per run in `runs.jsonl` of the results
 * folder, appended and flushed when the run finishes. A restart reads the file and skips what
 * is there, so an interruption loses at most the run in progress; a line cut short by a crash
 * is ignored (and reported) instead of failing the restart.
 */
import { mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isRunRecord, type RunRecord } from './run-record.js';

export const RUNS_FILE = 'runs.jsonl';

export class ResultsStore {
  private readonly records = new Map<string, RunRecord>();

  private constructor(
    readonly dir: string,
    /** Lines that could not be read back (cut short, or not a run record), 1-based. */
    readonly skippedLines: number[],
  ) {}

  static async open(dir: string): Promise<ResultsStore> {
    await mkdir(dir, { recursive: true });
    let text = '';
    try {
      text = await readFile(join(dir, RUNS_FILE), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const skipped: number[] = [];
    const parsed: RunRecord[] = [];
    text.split('\n').forEach((line, index) => {
      if (!line.trim()) return;
      try {
        const value: unknown = JSON.parse(line);
        if (isRunRecord(value)) parsed.push(value);
        else skipped.push(index + 1);
      } catch {
        skipped.push(index + 1);
      }
    });
    const store = new ResultsStore(dir, skipped);
    // A later line for the same key wins (a run repeated on purpose after deleting nothing).
    for (const record of parsed) store.records.set(record.key, record);
    return store;
  }

  get file(): string {
    return join(this.dir, RUNS_FILE);
  }

  has(key: string): boolean {
    return this.records.has(key);
  }

  get(key: string): RunRecord | undefined {
    return this.records.get(key);
  }

  /** Every finished run, in the order first finished. */
  all(): RunRecord[] {
    return [...this.records.values()];
  }

  /** Appends one finished run and flushes it to disk before returning. */
  async append(record: RunRecord): Promise<void> {
    if (!isRunRecord(record)) throw new TypeError('ResultsStore.append: not a complete run record');
    const handle = await open(this.file, 'a+');
    try {
      // Start on a fresh line even if a crash left the previous one without its newline.
      const size = (await handle.stat()).size;
      const prefix = size > 0 && !(await endsWithNewline(handle, size)) ? '\n' : '';
      await handle.write(`${prefix}${JSON.stringify(record)}\n`);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    this.records.set(record.key, record);
  }
}

async function endsWithNewline(handle: import('node:fs/promises').FileHandle, size: number): Promise<boolean> {
  const buffer = Buffer.alloc(1);
  await handle.read(buffer, 0, 1, size - 1);
  return buffer[0] === 0x0a;
}
