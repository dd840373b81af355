/**
 * The proxy's /metrics show how each answer was changed (top-1 changes, the perturbation's size,
 * client actions): a thief reading them between its queries would learn what the defense hid. So
 * they are served only with a bearer token, or when made public on purpose.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { ServingOptionError } from '../../../src/server/errors.js';
import { resolveProxyOptions } from '../../../src/server/proxy/options.js';
import { startDefenseProxy, type ProxyOptions, type RunningProxy } from '../../../src/server/proxy.js';
import { runCli } from '../../helpers/run-cli.js';
import { kserveRequest } from '../helpers/fixtures.js';
import { startProxyCommand } from '../helpers/proxy-command.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

const PATH = '/v2/models/mnist/infer';
const TOKEN = 'a-metrics-token-of-32-characters';

describe('who may read the proxy’s /metrics', () => {
  let upstream: StubUpstream;
  const running: RunningProxy[] = [];
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
  });
  after(async () => {
    for (const proxy of running) await proxy.close();
    await upstream.close();
  });
  const start = async (options: Partial<ProxyOptions>) => {
    const proxy = await startDefenseProxy({ upstream: upstream.url, defense: 'rounding:decimals=2', ...options });
    running.push(proxy);
    await request(proxy.url).post(PATH).send(kserveRequest()).expect(200);
    return proxy;
  };

  it('by default nobody: 403 saying what to set, and nothing of the metrics', async () => {
    const proxy = await start({});
    for (const method of ['get', 'head'] as const) {
      const res = await request(proxy.url)[method]('/metrics').expect(403);
      assert.doesNotMatch(res.text ?? '', /msd_/);
    }
    const res = await request(proxy.url).get('/metrics').set('authorization', `Bearer ${TOKEN}`).expect(403);
    assert.match(res.body.error, /set metricsToken \(msd proxy --metrics-token-env VAR\).*or metricsPublic \(--metrics-public\)/);
  });

  it('with a token: 401 without it or with another, 200 with it', async () => {
    const proxy = await start({ metricsToken: TOKEN });
    for (const authorization of [undefined, `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`, TOKEN, `Basic ${TOKEN}`]) {
      const req = request(proxy.url).get('/metrics');
      const res = await (authorization === undefined ? req : req.set('authorization', authorization)).expect(401);
      assert.equal(res.headers['www-authenticate'], 'Bearer');
      assert.doesNotMatch(res.text, /msd_/);
    }
    // The scheme's name in any case (RFC 9110).
    await request(proxy.url).get('/metrics').set('authorization', `bearer ${TOKEN}`).expect(200);
    const res = await request(proxy.url).get('/metrics').set('authorization', `Bearer ${TOKEN}`).expect(200);
    assert.match(res.text, /^msd_perturbation_l1_bucket\{le="0.01",defense="rounding:decimals=2"\} 1$/m);
  });

  it('public when asked for', async () => {
    const proxy = await start({ metricsPublic: true });
    assert.match((await request(proxy.url).get('/metrics').expect(200)).text, /^msd_requests_total/m);
  });

  it('refuses a short token, and a token with metricsPublic', () => {
    const refused = (options: Partial<ProxyOptions>, message: RegExp) =>
      assert.throws(
        () => resolveProxyOptions({ upstream: upstream.url, defense: 'argmax', ...options }),
        (e: unknown) => e instanceof ServingOptionError && message.test((e as Error).message),
      );
    refused({ metricsToken: 'short' }, /^metricsToken must be a string of at least 16 characters without spaces/);
    refused({ metricsToken: `${TOKEN} x` }, /^metricsToken must be a string of at least 16 characters without spaces/);
    refused({ metricsToken: TOKEN, metricsPublic: true }, /^metricsToken and metricsPublic: give one/);
    refused({ metricsPublic: 'yes' as never }, /^metricsPublic must be true or false/);
  });

  it('msd proxy: both flags refused, a missing or short token refused, before anything starts', () => {
    const args = ['proxy', '--upstream', upstream.url, '--defense', 'argmax', '--port', '0'];
    const both = runCli([...args, '--metrics-token-env', 'MSD_T', '--metrics-public'], undefined, { MSD_T: TOKEN });
    assert.equal(both.status, 2, both.stderr);
    assert.match(both.stderr, /--metrics-token-env and --metrics-public: give one/);
    const unset = runCli([...args, '--metrics-token-env', 'MSD_UNSET_TOKEN']);
    assert.equal(unset.status, 2, unset.stderr);
    assert.match(unset.stderr, /--metrics-token-env MSD_UNSET_TOKEN: the environment variable MSD_UNSET_TOKEN is not set/);
    const short = runCli([...args, '--metrics-token-env', 'MSD_T'], undefined, { MSD_T: 'short' });
    assert.equal(short.status, 2, short.stderr);
    assert.match(short.stderr, /the token must have at least 16 characters and no spaces/);
  });

  it('msd proxy: a token from the environment, its trailing newline (a mounted secret) trimmed', async () => {
    const proxy = await startProxyCommand(['--upstream', upstream.url, '--defense', 'argmax', '--metrics-token-env', 'MSD_T', '--log-level', 'silent'], {
      MSD_T: `${TOKEN}\n`,
    });
    try {
      assert.match(await proxy.waitFor(/proxy: /), /metrics at http:\S+\/metrics \(bearer token from MSD_T\)/);
      await request(proxy.url).get('/metrics').expect(401);
      await request(proxy.url).get('/metrics').set('authorization', `Bearer ${TOKEN}`).expect(200);
    } finally {
      await proxy.stop();
    }
  });
});
