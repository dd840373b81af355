/** A complete run record for tests of the store and the report. */
import type { RunRecord } from '../../../src/eval/records/run-record.js';

export function sampleRecord(key: string, overrides: Partial<RunRecord> = {}): RunRecord {
  return {
    key,
    victim: 'mnist',
    world: 'open',
    seed: 1,
    defense: 'mad',
    params: 'eps=0.5',
    spec: 'mad:eps=0.5',
    policy: 'random',
    budget: 1000,
    victimAccuracy: 0.97,
    defender: { accuracy: 0.96, accuracyLoss: 0.01, l1Mean: 0.4, l1Median: 0.45, top1ChangeRate: 0.01 },
    attackers: [
      { labels: 'soft', accuracy: 0.6, agreement: 0.61 },
      { labels: 'argmax', accuracy: 0.55, agreement: 0.56 },
    ],
    queries: 1000,
    requests: 4,
    seconds: 3.5,
    finishedAt: '2025-01-01T00:00:00.000Z',
    ...overrides,
  };
}
