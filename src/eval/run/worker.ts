/**
 * A child process of `--jobs`: receives the config and the world once, then runs the work units the
 * parent sends (one defense setting and attacker seed each) and sends back each finished record.
 */
import { initBackend } from '../../models/index.js';
import { buildDefense, openSession, runDefense, type Session } from './session.js';
import type { ChildMessage, ParentMessage } from './parallel.js';
import { silentProgress } from '../progress.js';
import type { RunSpec } from './run-key.js';

const send = (message: ChildMessage) =>
  new Promise<void>((resolve, reject) => process.send!(message, undefined, {}, (error) => (error ? reject(error) : resolve())));

let session: (Session & { dispose(): void }) | undefined;
let queue = Promise.resolve();

async function handle(message: ParentMessage): Promise<void> {
  if (message.type === 'exit') {
    session?.dispose();
    process.disconnect?.();
    return;
  }
  if (message.type === 'init') {
    await initBackend({ log: () => {} });
    const { config, world, cacheDir } = message;
    const defenses = config.defenses.map((setting) => buildDefense(setting, config));
    session = await openSession(config, world, defenses, { cacheDir }, silentProgress, () => {});
    await send({ type: 'ready' });
    return;
  }
  if (!session) throw new Error('work arrived before the init message');
  const { config } = session;
  const setting = config.defenses.find((d) => d.spec === message.runs[0].spec);
  if (!setting) throw new Error(`unknown defense setting ${message.runs[0].spec}`);
  const runs: RunSpec[] = message.runs.map((r) => ({ defense: setting, policy: r.policy, budget: r.budget, attackerSeed: r.attackerSeed }));
  await runDefense(session, setting, buildDefense(setting, config), runs, (record) => send({ type: 'record', record }));
  await send({ type: 'idle' });
}

process.on('message', (message: ParentMessage) => {
  queue = queue
    .then(() => handle(message))
    .catch(async (error: unknown) => {
      await send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) }).catch(() => {});
      process.exit(1);
    });
});

// Ctrl-C in a terminal reaches the whole process group: the parent decides (it finishes the runs in
// progress on the first, stops on the second), and ends this child by its 'exit' message or by going away.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => {});

// The parent is gone (it exited, or was killed mid-run): nobody will take this run's record, so stop
// now rather than finish it. A normal end (the 'exit' message) disconnects too, after disposing.
process.on('disconnect', () => process.exit(0));
