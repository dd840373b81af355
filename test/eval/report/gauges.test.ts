import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import type { AttackerLabels, PolicyName } from '../../../src/eval/config.js';
import { publishGauges } from '../../../src/eval/report/gauges.js';
import type { RunRecord } from '../../../src/eval/records/run-record.js';
import { createServingMetrics } from '../../../src/server/metrics.js';
import { sampleRecord } from '../helpers/sample-record.js';

/** One attacker family against one setting, over three seeds. */
function runs(spec: string, policy: PolicyName, accuracies: Partial<Record<AttackerLabels, number[]>>, budget = 10000): RunRecord[] {
  const [defense, params = ''] = spec.split(':');
  return [0, 1, 2].map((seed) =>
    sampleRecord(`${spec}-${policy}-${budget}-${seed}`, {
      defense,
      params,
      spec,
      policy,
      budget,
      attackerSeed: seed,
      attackers: (Object.entries(accuracies) as [AttackerLabels, number[]][]).map(([labels, values]) => ({
        labels,
        accuracy: values[seed],
        agreement: values[seed],
      })),
    }),
  );
}

async function series(registry: Registry, name: string): Promise<{ labels: Record<string, string | number>; value: number }[]> {
  const metric = registry.getSingleMetric(name);
  assert.ok(metric, `${name} is not in the registry`);
  return (await metric.get()).values.map(({ labels, value }) => ({ labels: labels as Record<string, string | number>, value }));
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

describe('the evaluation gauges', () => {
  const records = [
    ...runs('none', 'random', { soft: [0.9, 0.91, 0.89], argmax: [0.88, 0.87, 0.89] }),
    // MAD keeps top-1: the top-1 attacker beats the soft one, and smoothing beats it too at this budget.
    ...runs('mad:eps=0.5', 'random', { soft: [0.58, 0.59, 0.57], argmax: [0.62, 0.6, 0.64] }),
    ...runs('mad:eps=0.5', 'smoothing', { soft: [0.66, 0.65, 0.67] }),
    // A smaller budget is not the headline: its stronger figure must not count.
    ...runs('mad:eps=0.5', 'restorer', { soft: [0.95, 0.95, 0.95] }, 1000),
  ];

  it('publish the worst case per defense: the strongest attacker at the largest budget, mean over seeds, named', async () => {
    const registry = new Registry();
    publishGauges(createServingMetrics({ registry }), records);
    const worst = await series(registry, 'msd_worst_case_attacker_accuracy_ratio');
    assert.equal(worst.length, 2, JSON.stringify(worst));
    const mad = worst.find((s) => s.labels.defense === 'mad:eps=0.5');
    assert.deepEqual(mad?.labels, { defense: 'mad:eps=0.5', attacker: 'smoothing' });
    assert.ok(Math.abs(mad!.value - mean([0.66, 0.65, 0.67])) < 1e-9, `${mad!.value}`);
    const none = worst.find((s) => s.labels.defense === 'none');
    assert.deepEqual(none?.labels, { defense: 'none', attacker: 'knockoff-random' });
    assert.ok(Math.abs(none!.value - mean([0.9, 0.91, 0.89])) < 1e-9, `${none!.value}`);
  });

  it('keep the soft Knockoff gauge as it was: the headline random run at the largest budget', async () => {
    const registry = new Registry();
    publishGauges(createServingMetrics({ registry }), records);
    const soft = await series(registry, 'msd_attacker_accuracy_ratio');
    assert.equal(soft.find((s) => s.labels.defense === 'mad:eps=0.5')?.value, 0.58);
  });

  it('replace the series when a stronger attacker is measured later, under the metrics prefix', async () => {
    const registry = new Registry();
    const metrics = createServingMetrics({ registry, prefix: 'guard_' });
    const randomOnly = records.filter((r) => r.policy === 'random');
    publishGauges(metrics, randomOnly);
    assert.deepEqual((await series(registry, 'guard_worst_case_attacker_accuracy_ratio')).find((s) => s.labels.defense === 'mad:eps=0.5')?.labels, {
      defense: 'mad:eps=0.5',
      attacker: 'top-1',
    });
    publishGauges(metrics, records);
    const mad = (await series(registry, 'guard_worst_case_attacker_accuracy_ratio')).filter((s) => s.labels.defense === 'mad:eps=0.5');
    assert.deepEqual(
      mad.map((s) => s.labels.attacker),
      ['smoothing'],
    );
  });
});
