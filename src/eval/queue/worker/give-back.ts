/**
 * A run this worker took but never sent to a child (its children cannot start) goes back to the
 * queue without using up one of its tries. BullMQ's documented way, moveToWait with the lock's token
 * and then WaitingError from the processor, leaves the run's failed tries (attemptsMade) as they
 * were; but a run's tries are also capped by its starts (attemptsStarted, under maxStartedAttempts),
 * and BullMQ counted one when it handed the run out. That start is taken back first, and only while
 * this worker still holds the run's lock, so no other worker can have taken the run meanwhile.
 */
import type { Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';

// BullMQ keeps attemptsStarted in the job's hash as "ats", and the job's lock (its holder's token) under "<job key>:lock".
const UNCOUNT_START = `if redis.call('GET', KEYS[2]) == ARGV[1] and tonumber(redis.call('HGET', KEYS[1], 'ats') or '0') > 0 then
  return redis.call('HINCRBY', KEYS[1], 'ats', -1)
end
return -1`;

/** Back to waiting, its start uncounted; the processor then throws WaitingError (so BullMQ neither completes nor fails it). */
export async function giveBackRun(redis: Redis, worker: Worker, job: Job, token: string): Promise<void> {
  const key = worker.toKey(job.id!);
  await redis.eval(UNCOUNT_START, 2, key, `${key}:lock`, token);
  await job.moveToWait(token);
}
