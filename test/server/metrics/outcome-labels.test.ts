/** msd_requests_total names outcomes for what happened: an undefended answer is not "defended", a scanner's 404 is a client's miss. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { startDefenseProxy, type RunningProxy } from '../../../src/server/proxy.js';
import { kserveRequest } from '../helpers/fixtures.js';
import { startStubUpstream, type StubUpstream } from '../helpers/stub-upstream.js';

describe('outcome labels', () => {
  let upstream: StubUpstream;
  const proxies: RunningProxy[] = [];
  before(async () => {
    upstream = await startStubUpstream('kserve-v2', undefined, { record: false });
  });
  after(async () => {
    for (const proxy of proxies) await proxy.close();
    await upstream.close();
  });
  const start = async (defense: string) => {
    const proxy = await startDefenseProxy({ upstream: upstream.url, protocol: 'kserve-v2', defense, metricsPublic: true });
    proxies.push(proxy);
    return proxy;
  };
  const metrics = async (proxy: RunningProxy) => (await request(proxy.url).get('/metrics').expect(200)).text;

  it('an answer under defense none is "undefended", one under a defense "defended"', async () => {
    const none = await start('none');
    const rounding = await start('rounding:decimals=2');
    await request(none.url).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
    await request(rounding.url).post('/v2/models/mnist/infer').send(kserveRequest()).expect(200);
    assert.match(await metrics(none), /msd_requests_total\{defense="none",outcome="undefended"\} 1\n/);
    assert.doesNotMatch(await metrics(none), /outcome="defended"/);
    assert.match(await metrics(rounding), /msd_requests_total\{defense="rounding:decimals=2",outcome="defended"\} 1\n/);
  });

  it('a route the proxy does not serve is "not_found", a client mistake, not a service error', async () => {
    const proxy = await start('rounding:decimals=2');
    await request(proxy.url).get('/wp-login.php').expect(404);
    await request(proxy.url).get('/.env').expect(404);
    const text = await metrics(proxy);
    assert.match(text, /msd_requests_total\{defense="rounding:decimals=2",outcome="not_found"\} 2\n/);
  });
});
