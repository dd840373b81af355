/** The probation tier must keep top-1 and perturb the answer: judged by what the tier does, not by its name. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDefense, type Defense } from '../../../../src/defenses/index.js';
import { createClientDetection } from '../../../../src/detection/index.js';
import { passesProbabilities, resolveAboveConfig } from '../../../../src/server/clients/above/above-config.js';
import { createClientGate } from '../../../../src/server/clients/gate.js';
import type { ClientsOptions } from '../../../../src/server/clients/options.js';
import { ServingOptionError } from '../../../../src/server/errors.js';
import { createServingMetrics } from '../../../../src/server/metrics.js';

const detection = createClientDetection({ prada: { enabled: false }, budget: false, policy: { steps: ['rs'] } });
const reverseSigmoid = parseDefense('reverse-sigmoid');

const probationOf = (tiers: Record<string, Defense>, extra: Partial<ClientsOptions> = {}) =>
  resolveAboveConfig({ identity: 'ip', detection, population: {}, ...extra } as ClientsOptions<never>, detection, new Map(Object.entries(tiers)))?.probation
    ?.name;

describe('the probation tier', () => {
  it('tells a tier that hands out probabilities from one that perturbs some entries and leaves others', () => {
    for (const spec of ['none', 'topk:k=1', 'topk:k=2', 'topk:k=2,renormalize=true']) assert.equal(passesProbabilities(parseDefense(spec)), true, spec);
    // ModelGuard-W moves mass between a few classes: the other entries come out as they were, yet the answer is perturbed.
    for (const spec of ['modelguard-w:eps=0.5', 'modelguard-w:eps=1', 'argmax', 'topk:k=1,renormalize=true', 'rounding:decimals=2', 'reverse-sigmoid'])
      assert.equal(passesProbabilities(parseDefense(spec)), false, spec);
  });

  it('the gate refuses to start with a tier that passes the model’s probabilities, naming it and what to use instead', () => {
    const metrics = createServingMetrics();
    for (const spec of ['none', 'topk:k=3', 'topk:k=1', 'topk:k=2,renormalize=true']) {
      assert.throws(
        () =>
          createClientGate(
            { identity: 'ip', detection, population: {}, probationTier: 'x' },
            { defense: parseDefense('argmax'), tiers: new Map([['x', parseDefense(spec)]]), metrics },
          ),
        (e: Error) =>
          e instanceof ServingOptionError &&
          e.message.includes(`"x" (${parseDefense(spec).spec}) passes the model's probabilities through`) &&
          e.message.includes('set clients.probationTier to a tier such as "mad-argmax:eps=0.8" or "argmax"'),
        spec,
      );
    }
    // A tier built for logits reads the rows as logits: passing their softmax is passing the probabilities.
    assert.throws(() => probationOf({ x: parseDefense('none', { inputFormat: 'logits' }) }, { probationTier: 'x' }), /passes the model's probabilities/);
    // escalationTier stands in for probationTier, with the same check.
    assert.throws(() => probationOf({ x: parseDefense('none') }, { escalationTier: 'x' }), /"x" \(none\) passes/);
  });

  it('accepts the tiers that keep top-1 and perturb', () => {
    for (const spec of ['argmax', 'topk:k=1,renormalize=true', 'mad-argmax:eps=0.8', 'none|argmax']) {
      assert.equal(probationOf({ x: parseDefense(spec) }, { probationTier: 'x' }), 'x', spec);
    }
  });

  it('without one named, picks by what each tier does: the ladder’s first fit tier, else the first fit one of tiers', () => {
    // Named "argmax", does nothing: never the probation tier.
    const impostor = parseDefense('none');
    const label = parseDefense('argmax');
    assert.equal(probationOf({ rs: reverseSigmoid, argmax: impostor, 'label-only': label }), 'label-only');
    assert.equal(probationOf({ rs: reverseSigmoid, 'mad-argmax': parseDefense('topk:k=2'), labels: label }), 'labels');
    // The ladder's first fit tier comes before the others.
    const ladder = createClientDetection({ prada: { enabled: false }, budget: false, policy: { steps: ['none-tier', 'soft', 'hard'] } });
    const tiers = new Map<string, Defense>([
      ['hard', label],
      ['none-tier', impostor],
      ['soft', parseDefense('mad-argmax:eps=0.8')],
    ]);
    assert.equal(resolveAboveConfig({ identity: 'ip', detection: ladder, population: {} } as ClientsOptions<never>, ladder, tiers)?.probation?.name, 'soft');
    // None fit: the start-up error says what to add.
    assert.throws(() => probationOf({ rs: reverseSigmoid, argmax: impostor }), /need a probation tier that keeps top-1 and perturbs the answer/);
  });
});
