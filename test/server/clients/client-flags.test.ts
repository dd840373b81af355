import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Command } from 'commander';
import { addClientFlags, clientOptionsFromFlags, type ClientFlags } from '../../../src/cli/flags/client-flags.js';
import { ServingOptionError } from '../../../src/server/errors.js';
import { poisonPredictions } from '../../../src/server/middleware.js';
import { countDetection } from '../helpers/count-detection.js';

const parse = (argv: string[]): ClientFlags => addClientFlags(new Command().exitOverride()).parse(argv, { from: 'user' }).opts<ClientFlags>();

describe('client detection flags', () => {
  it('turn into clients options that the serving layer accepts', async () => {
    const flags = parse([
      '--client-id',
      'ip',
      '--trust-proxy',
      '10.0.0.0/8, 192.168.1.1',
      '--redis',
      'redis://127.0.0.1:6390',
      '--admin-token-env',
      'MSD_ADMIN',
      '--client-fail-mode',
      'refuse',
      '--client-ttl-s',
      '60',
    ]);
    const detection = countDetection({});
    const options = clientOptionsFromFlags(flags, { MSD_ADMIN: 'admin-token-0123456789' }, detection)!;
    assert.deepEqual(options.trustProxy, ['10.0.0.0/8', '192.168.1.1']);
    assert.deepEqual(options.store, { redis: 'redis://127.0.0.1:6390', ttlMs: 60_000 });
    assert.equal(options.failMode, 'refuse');
    assert.deepEqual(options.admin, { token: 'admin-token-0123456789', path: '/admin/clients' });
    const guard = poisonPredictions({ defense: 'argmax', clients: { ...options, store: 'memory' } });
    assert.ok(guard.adminHandler);
    await guard.clients!.close();
  });

  it('--cohort, --population, --fingerprints and --probation-tier: options of detection above the client', async () => {
    const flags = parse([
      '--client-id',
      'header:x-api-key',
      '--cohort',
      'jwt:org',
      '--population',
      '{"youngQueries":50,"ood":{"maxRate":0.1}}',
      '--fingerprints',
      '--probation-tier',
      'argmax',
    ]);
    const options = clientOptionsFromFlags(flags, {}, countDetection({}))!;
    assert.equal(options.cohort, 'jwt:org');
    assert.deepEqual(options.population, { youngQueries: 50, ood: { maxRate: 0.1 } });
    assert.deepEqual(options.fingerprints, {}, 'given without a value: the defaults');
    assert.equal(options.probationTier, 'argmax');
    const guard = poisonPredictions({ defense: 'rounding:decimals=2', tiers: { argmax: 'argmax' }, clients: options });
    assert.equal(guard.clients!.requiresInputs, true, 'fingerprints read the inputs');
    await guard.clients!.close();
    assert.equal(parse(['--client-id', 'ip']).population, undefined, 'off unless given');
    assert.throws(() => clientOptionsFromFlags(parse(['--client-id', 'ip', '--population', '{nope']), {}, countDetection({})), /--population must be JSON/);
    assert.throws(
      () => clientOptionsFromFlags(parse(['--client-id', 'ip', '--fingerprints', '[1]']), {}, countDetection({})),
      /--fingerprints must be an object/,
    );
    assert.throws(() => clientOptionsFromFlags(parse(['--cohort', 'ip']), {}, countDetection({})), /need --client-id/);
  });

  it('leave detection off without --client-id, and refuse half-configurations', () => {
    assert.equal(clientOptionsFromFlags(parse([]), {}, countDetection({})), undefined);
    assert.throws(() => clientOptionsFromFlags(parse(['--redis', 'redis://x']), {}, countDetection({})), /need --client-id/);
    assert.throws(
      () => clientOptionsFromFlags(parse(['--client-id', 'ip', '--admin-token-env', 'NOPE']), {}, countDetection({})),
      (e: Error) => e instanceof ServingOptionError && /NOPE is not set/.test(e.message),
    );
    assert.throws(() => clientOptionsFromFlags(parse(['--client-id', 'ip', '--client-fail-mode', 'open']), {}, countDetection({})), /"local" or "refuse"/);
    assert.throws(() => clientOptionsFromFlags(parse(['--client-id', 'ip']), {}, undefined), /detection/);
  });
});
