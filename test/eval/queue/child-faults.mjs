/**
 * Test-only faults for a queue worker's child processes (queue.test.ts). A worker started with
 * NODE_OPTIONS="--import <this file>" and MSD_TEST_CHILD_FAULT=<fault>:<dir> loads it into itself and
 * into every child it forks; it acts only in a forked child (one with an IPC channel), never in the
 * worker, and does nothing without MSD_TEST_CHILD_FAULT. Plain JavaScript: it loads before tsx.
 *
 *   crash-then-no-start  the first child given a run exits at once; every child started after that
 *                        exits before it is ready (a machine whose children can no longer start)
 *   hang-first-run       the first child given a run blocks its event loop until it is killed
 *   crash-then-hang-before-ready
 *                        the first child given a run exits at once; every child started after that
 *                        blocks before it is ready (a replacement stuck loading the victim)
 *
 * <dir>, a scratch folder of the test, holds the marker that makes "first" hold across the children.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const setting = process.env.MSD_TEST_CHILD_FAULT ?? '';
const colon = setting.indexOf(':');
const fault = setting.slice(0, colon);
const marker = join(setting.slice(colon + 1), 'first-run-taken');

/** True in the one child that claims the first run (the marker is created once, atomically). */
function claimFirstRun() {
  try {
    writeFileSync(marker, String(process.pid), { flag: 'wx' });
    return true;
  } catch {
    return false;
  }
}

function onMessage(message) {
  if (message?.type !== 'unit' || !claimFirstRun()) return;
  if (fault === 'crash-then-no-start' || fault === 'crash-then-hang-before-ready') process.exit(1);
  if (fault === 'hang-first-run') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}

if (process.send && colon > 0) {
  if (fault === 'crash-then-no-start' && existsSync(marker)) process.exit(1);
  if (fault === 'crash-then-hang-before-ready' && existsSync(marker)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  // Put before the child's own listener, once that is in: a listener of this file's own, earlier,
  // would start the IPC channel and take the init message before the child listens.
  process.on('newListener', function waitForChild(event) {
    if (event !== 'message') return;
    process.off('newListener', waitForChild);
    queueMicrotask(() => process.prependListener('message', onMessage));
  });
}
