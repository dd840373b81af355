/**
 * Evaluation processes on one machine share its cores. Each process that runs jobs (`msd eval --jobs`,
 * every `msd eval-worker`) registers its job count in a folder under the OS temp dir, one file per
 * process named by its pid; a job's training threads (onnxruntime's, MSD_TRAIN_THREADS in the child)
 * are the cores over every live process's jobs. Without it, two `msd eval-worker --jobs 1` on a
 * 2-core machine each gave their child two threads: four spinning threads on two cores, and every
 * run far slower than under one `--jobs 2`.
 *
 * The count is read again whenever a run is handed out, so a worker started later lowers the threads
 * of the runs that follow. Nothing here may fail an evaluation: an unwritable folder leaves the share
 * at this process's own jobs, as before.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';

export interface HostShare {
  /** Training threads for one job now: the cores over the jobs of every live evaluation process here, at least 1. */
  threadsPerJob(): number;
  /** Takes this process's jobs out of the count (also done when the process exits). */
  release(): void;
}

export interface HostShareOptions {
  /** The folder of registrations (tests); default one per user under the OS temp dir. */
  dir?: string;
  /** The machine's cores; default availableParallelism(). */
  cores?: number;
}

const defaultDir = (): string => join(tmpdir(), `msd-eval-jobs-${process.getuid?.() ?? 'user'}`);

/** Whether a process with this pid runs (one of another user's counts too). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A folder this user owns and no one else may write to: in a shared temp dir another user could have
 * made it first, and planted links where this process writes.
 */
function ownPrivateFolder(dir: string): boolean {
  const stat = lstatSync(dir);
  const uid = process.getuid?.();
  return stat.isDirectory() && (uid === undefined || stat.uid === uid) && (stat.mode & 0o022) === 0;
}

/** Registers `jobs` jobs of this process; call release() when they end. */
export function shareHostCores(jobs: number, options: HostShareOptions = {}): HostShare {
  const dir = options.dir ?? defaultDir();
  const cores = options.cores ?? availableParallelism();
  const file = join(dir, String(process.pid));
  let registered = false;
  // Whether the folder is one to trust: without it, the count is this process's own jobs.
  let shared = false;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!ownPrivateFolder(dir)) throw new Error('not ours');
    shared = true;
    writeFileSync(file, String(jobs));
    registered = true;
  } catch {
    // Not shared: this process counts its own jobs only.
  }
  const release = (): void => {
    if (!registered) return;
    registered = false;
    process.off('exit', release);
    rmSync(file, { force: true });
  };
  if (registered) process.once('exit', release);

  const liveJobs = (): number => {
    if (!shared) return jobs;
    let total = 0;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return jobs;
    }
    for (const name of names) {
      if (!/^[1-9]\d*$/.test(name)) continue;
      const pid = Number(name);
      if (pid === process.pid) continue;
      if (!alive(pid)) {
        rmSync(join(dir, name), { force: true });
        continue;
      }
      let count = 0;
      try {
        count = Number(readFileSync(join(dir, name), 'utf8'));
      } catch {
        // Released while being read.
      }
      if (Number.isSafeInteger(count) && count > 0) total += count;
    }
    return total + jobs;
  };

  return {
    threadsPerJob: () => Math.max(1, Math.floor(cores / liveJobs())),
    release,
  };
}
