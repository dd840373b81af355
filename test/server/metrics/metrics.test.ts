import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Counter, Registry } from 'prom-client';
import { createServingMetrics, recordEvaluation } from '../../../src/server/metrics.js';

describe('serving metrics', () => {
  it('publishes the evaluation’s utility loss and attacker accuracy as gauges by defense', async () => {
    const metrics = createServingMetrics({ prefix: 'demo_' });
    recordEvaluation(metrics, { defense: 'mad:eps=0.5', utilityLoss: 0.012, attackerAccuracy: 0.53 });
    recordEvaluation(metrics, { defense: 'argmax', attackerAccuracy: 0.56 });
    const text = await metrics.registry.metrics();
    assert.match(text, /demo_utility_loss_ratio\{defense="mad:eps=0\.5"\} 0\.012/);
    assert.match(text, /demo_attacker_accuracy_ratio\{defense="mad:eps=0\.5"\} 0\.53/);
    assert.match(text, /demo_attacker_accuracy_ratio\{defense="argmax"\} 0\.56/);
    assert.doesNotMatch(text, /demo_utility_loss_ratio\{defense="argmax"\}/);
    assert.throws(() => recordEvaluation(metrics, { defense: 'x', attackerAccuracy: 53 }), /ratio in \[0, 1\]/);
  });

  it('reuses metrics already on a registry, and refuses a name taken by another metric type', () => {
    const registry = new Registry();
    const first = createServingMetrics({ registry });
    const second = createServingMetrics({ registry });
    assert.equal(first.l1, second.l1);
    const clash = new Registry();
    new Counter({ name: 'msd_perturbation_l1', help: 'not a histogram', registers: [clash] });
    assert.throws(() => createServingMetrics({ registry: clash }), /already exists in this registry with another type/);
    assert.throws(() => createServingMetrics({ prefix: 'bad-prefix' }), /not a valid Prometheus name prefix/);
  });
});
