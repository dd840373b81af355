import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { addressPrefix, createCohortReader, ipv6Groups } from '../../../../src/server/clients/above/cohort.js';
import { ServingOptionError } from '../../../../src/server/errors.js';

function fakeRequest(headers: Record<string, string>, remoteAddress = '203.0.113.9'): IncomingMessage {
  return { headers, socket: { remoteAddress } } as unknown as IncomingMessage;
}

const jwt = (claims: object): string =>
  `Bearer ${Buffer.from('{"alg":"HS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2lnbmF0dXJl`;

describe('cohort keys', () => {
  it('IPv4 prefixes: /24 by default, any length', () => {
    assert.equal(addressPrefix('203.0.113.9'), '203.0.113.0/24');
    assert.equal(addressPrefix('203.0.113.250'), '203.0.113.0/24');
    assert.equal(addressPrefix('::ffff:203.0.113.9'), '203.0.113.0/24', 'IPv4 through a dual-stack socket');
    assert.equal(addressPrefix('203.0.113.9', 16), '203.0.0.0/16');
    assert.equal(addressPrefix('255.255.255.255', 20), '255.255.240.0/20');
    assert.equal(addressPrefix('10.1.2.3', 32), '10.1.2.3/32');
    assert.equal(addressPrefix('not an address'), undefined);
  });

  it('IPv6 prefixes: /64 by default, with :: and an embedded IPv4 tail', () => {
    assert.deepEqual(ipv6Groups('2001:db8::1'), [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
    assert.deepEqual(ipv6Groups('::1.2.3.4'), [0, 0, 0, 0, 0, 0, 0x102, 0x304]);
    assert.equal(ipv6Groups('1.2.3.4'), undefined);
    assert.equal(addressPrefix('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2:0:0:0:0/64');
    assert.equal(addressPrefix('2001:db8:1:2::99'), '2001:db8:1:2:0:0:0:0/64');
    assert.equal(addressPrefix('2001:DB8:1:2::99'), '2001:db8:1:2:0:0:0:0/64', 'case does not matter');
    assert.equal(addressPrefix('2001:db8:1:2ff::99', 24, 56), '2001:db8:1:200:0:0:0:0/56');
    assert.equal(addressPrefix('2001:db8:1:2ff::99', 24, 48), '2001:db8:1:0:0:0:0:0/48');
    assert.equal(addressPrefix('fe80::1%eth0'), 'fe80:0:0:0:0:0:0:0/64', 'a zone id is dropped');
  });

  it('a port, brackets and IPv4-mapped spellings are read as the address they carry', () => {
    assert.equal(addressPrefix('203.0.113.7:50123'), '203.0.113.0/24');
    assert.equal(addressPrefix('[2001:db8:1:2::99]:443'), '2001:db8:1:2:0:0:0:0/64');
    assert.equal(addressPrefix('[2001:db8:1:2::99]'), '2001:db8:1:2:0:0:0:0/64');
    // IPv4-mapped, however written: the IPv4 /24, not one shared IPv6 /64 (0:0:0:0:0:0:0:0/64) for every such client.
    for (const mapped of ['0:0:0:0:0:ffff:1.2.3.4', '::ffff:102:304', '0:0:0:0:0:FFFF:0102:0304', '[::ffff:1.2.3.4]:80'])
      assert.equal(addressPrefix(mapped), '1.2.3.0/24', mapped);
    assert.equal(addressPrefix('::ffff:102:304', 24, 64), addressPrefix('1.2.3.4'));
    assert.notEqual(addressPrefix('::ffff:102:304'), addressPrefix('::ffff:506:708'), 'two mapped networks, two cohorts');
    assert.equal(addressPrefix('203.0.113.7:port'), undefined);
  });

  it('"ip" behind a proxy that writes ports: one cohort per network, whatever the source port', () => {
    const cohortOf = createCohortReader({ cohort: 'ip', trustProxy: ['10.0.0.0/8'] });
    const direct = cohortOf(fakeRequest({}, '203.0.113.7'), undefined);
    assert.notEqual(direct, undefined);
    assert.equal(cohortOf(fakeRequest({ 'x-forwarded-for': '203.0.113.7:50123' }, '10.0.0.1'), undefined), direct);
    assert.equal(cohortOf(fakeRequest({ 'x-forwarded-for': '203.0.113.8:50124' }, '10.0.0.1'), undefined), direct);
    assert.equal(cohortOf(fakeRequest({ 'x-forwarded-for': '203.0.113.7:50123, 10.1.2.3:8080' }, '10.0.0.1'), undefined), direct, 'a trusted hop with a port');
    assert.equal(cohortOf(fakeRequest({ 'x-forwarded-for': '::ffff:cb00:7107' }, '10.0.0.1'), undefined), direct, 'IPv4-mapped, non-canonical');
    const v6 = createCohortReader({ cohort: 'ip', trustProxy: ['10.0.0.0/8'] });
    assert.equal(v6(fakeRequest({ 'x-forwarded-for': '[2001:db8:5:6::1]:443' }, '10.0.0.1'), undefined), v6(fakeRequest({}, '2001:db8:5:6::2'), undefined));
  });

  it('"ip": neighbours share a cohort, other networks do not; spoofed X-Forwarded-For from an untrusted peer is ignored', () => {
    const cohortOf = createCohortReader({ cohort: 'ip', trustProxy: ['10.0.0.0/8'] });
    const a = cohortOf(fakeRequest({}, '198.51.100.7'), undefined);
    assert.equal(cohortOf(fakeRequest({}, '198.51.100.200'), undefined), a, 'same /24');
    assert.notEqual(cohortOf(fakeRequest({}, '198.51.101.7'), undefined), a, 'another /24');
    // An untrusted peer claims another address: its own /24 counts.
    assert.equal(cohortOf(fakeRequest({ 'x-forwarded-for': '192.0.2.1' }, '198.51.100.8'), undefined), a);
    // Through a trusted proxy: the right-most untrusted hop's /24 (left hops are the client's own claims).
    assert.equal(cohortOf(fakeRequest({ 'x-forwarded-for': '192.0.2.1, 198.51.100.9' }, '10.0.0.5'), undefined), a);
    assert.notEqual(cohortOf(fakeRequest({ 'x-forwarded-for': '198.51.100.9, 192.0.2.1' }, '10.0.0.5'), undefined), a);
    // IPv6: a /64 is one cohort (one subscriber's many addresses).
    const v6 = createCohortReader({ cohort: 'ip' });
    assert.equal(v6(fakeRequest({}, '2001:db8:5:6::1'), undefined), v6(fakeRequest({}, '2001:db8:5:6:ffff::2'), undefined));
    assert.notEqual(v6(fakeRequest({}, '2001:db8:5:6::1'), undefined), v6(fakeRequest({}, '2001:db8:5:7::1'), undefined));
    // Other prefix lengths.
    const wide = createCohortReader({ cohort: 'ip/16/48' });
    assert.equal(wide(fakeRequest({}, '198.51.1.1'), undefined), wide(fakeRequest({}, '198.51.200.1'), undefined));
    assert.equal(createCohortReader({ cohort: 'ip' })(fakeRequest({}, ''), undefined), undefined, 'no address, no cohort');
  });

  it('"jwt:CLAIM", "header:NAME", "prefix:N" and a function; hashed, with the id secret', () => {
    const org = createCohortReader({ cohort: 'jwt:org' });
    const acme = org(fakeRequest({ authorization: jwt({ sub: 'u1', org: 'acme' }) }), undefined);
    assert.match(acme!, /^[0-9a-f]{32}$/);
    assert.equal(org(fakeRequest({ authorization: jwt({ sub: 'u2', org: 'acme' }) }), undefined), acme);
    assert.notEqual(org(fakeRequest({ authorization: jwt({ sub: 'u1', org: 'other' }) }), undefined), acme);
    assert.equal(org(fakeRequest({ authorization: jwt({ sub: 'u1' }) }), undefined), undefined);
    const header = createCohortReader({ cohort: 'header:X-Tenant' });
    assert.equal(header(fakeRequest({ 'x-tenant': 't1' }), undefined), header(fakeRequest({ 'x-tenant': 't1' }), undefined));
    assert.equal(header(fakeRequest({}), undefined), undefined);
    const prefix = createCohortReader({ cohort: 'prefix:6' });
    assert.equal(prefix(fakeRequest({}), 'acme01_secret-1'), prefix(fakeRequest({}), 'acme01_secret-2'));
    assert.notEqual(prefix(fakeRequest({}), 'acme01_secret-1'), prefix(fakeRequest({}), 'beta02_secret-1'));
    assert.equal(prefix(fakeRequest({}), 'short'), undefined, 'an identity no longer than the prefix has no cohort');
    const fn = createCohortReader({ cohort: (req) => req.headers['x-team'] as string | undefined });
    assert.equal(fn(fakeRequest({ 'x-team': 'a' }), undefined), fn(fakeRequest({ 'x-team': 'a' }), undefined));
    assert.equal(
      createCohortReader({
        cohort: () => {
          throw new Error('boom');
        },
      })(fakeRequest({}), undefined),
      undefined,
      'a throwing function: no cohort',
    );
    // The hash depends on the secret and on the kind of key (a tenant named like a header value does not collide).
    assert.notEqual(createCohortReader({ cohort: 'jwt:org', idSecret: 's1' })(fakeRequest({ authorization: jwt({ org: 'acme' }) }), undefined), acme);
    assert.notEqual(createCohortReader({ cohort: 'header:x-org' })(fakeRequest({ 'x-org': 'acme' }), undefined), acme);
  });

  it('rejects bad specs with what to write instead', () => {
    for (const spec of ['cookie:x', 'ip/99', 'ip/24/200', 'prefix:0', 'ipv4', 42]) {
      assert.throws(
        () => createCohortReader({ cohort: spec as string }),
        (e: Error) => e instanceof ServingOptionError && /clients\.cohort/.test(e.message),
        String(spec),
      );
    }
  });

  it('names the field and what was given, and refuses unknown keys with the allowed ones', () => {
    const refused = (config: object, message: RegExp) =>
      assert.throws(
        () => createCohortReader(config as never),
        (e: unknown) => e instanceof ServingOptionError && message.test((e as Error).message),
        `expected ${message}`,
      );
    refused({ cohort: 'cookie:x' }, /^clients\.cohort must be "ip" .*, or a function \(req, rawId\) => key, got "cookie:x"$/);
    refused({ cohort: 'ip/33' }, /^clients\.cohort "ip\/33": prefix lengths must be 1–32 \(IPv4\) and 1–128 \(IPv6\)/);
    refused({ cohort: 'prefix:300' }, /^clients\.cohort "prefix:300": N must be from 1 to 256/);
    refused({ cohort: 'ip', trustProxy: '10.0.0.0/8' }, /^clients\.trustProxy must be a list of CIDRs or addresses, .*, got "10\.0\.0\.0\/8"$/);
    refused({ cohort: 'ip', trustProxy: ['10.0.0.0/99'] }, /^clients\.trustProxy\[0\] must be an address or CIDR/);
    refused({ cohort: 'ip', idSecret: 7 }, /^clients\.idSecret must be a string \(the key hashing client ids\), got 7$/);
    refused({ cohort: 'ip', secret: 's' }, /^clients: unknown option\(s\) secret; allowed: cohort, trustProxy, idSecret$/);
  });
});
