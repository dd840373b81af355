import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { ServingOptionError } from '../../../src/server/errors.js';
import { createIdentifier } from '../../../src/server/clients/identity.js';

function fakeRequest(headers: Record<string, string>, remoteAddress = '203.0.113.9'): IncomingMessage {
  return { headers, socket: { remoteAddress } } as unknown as IncomingMessage;
}

const jwt = (claims: object): string =>
  `Bearer ${Buffer.from('{"alg":"HS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2lnbmF0dXJl`;

describe('client identity', () => {
  it('hashes an API-key header: the same key, the same id; never the raw key', () => {
    const identify = createIdentifier({ identity: 'header:X-API-Key' });
    const a = identify(fakeRequest({ 'x-api-key': 'key-alpha-123' }));
    const b = identify(fakeRequest({ 'x-api-key': 'key-alpha-123' }, '198.51.100.1'));
    const c = identify(fakeRequest({ 'x-api-key': 'key-beta-456' }));
    assert.equal(a.anonymous, false);
    assert.equal(a.id, b.id);
    assert.notEqual(a.id, c.id);
    assert.match(a.id, /^[0-9a-f]{32}$/);
    assert.ok(!a.id.includes('alpha'));
  });

  it('derives the id as it always has: stores shared across replicas and versions are keyed by it', () => {
    const req = fakeRequest({ 'x-api-key': 'key-alpha-123' }, '198.51.100.7');
    const sha = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 32);
    const hmac = (secret: string, text: string) => createHmac('sha256', secret).update(text).digest('hex').slice(0, 32);
    assert.equal(createIdentifier({ identity: 'header:x-api-key' })(req).id, sha('header:key-alpha-123'));
    assert.equal(createIdentifier({ identity: 'ip' })(req).id, sha('ip:198.51.100.7'));
    assert.equal(createIdentifier({ identity: 'header:x-api-key', idSecret: 's3cret' })(req).id, hmac('s3cret', 'header:key-alpha-123'));
    // One identifier, many requests: the same digest each time (no state carried between them).
    const identify = createIdentifier({ identity: 'header:x-api-key', idSecret: 's3cret' });
    for (const key of ['a', 'b', 'a']) assert.equal(identify(fakeRequest({ 'x-api-key': key })).id, hmac('s3cret', `header:${key}`));
  });

  it('keys the hash with idSecret (HMAC): another secret, another id', () => {
    const req = fakeRequest({ 'x-api-key': 'key-alpha-123' });
    const one = createIdentifier({ identity: 'header:x-api-key', idSecret: 'secret-one' })(req).id;
    const two = createIdentifier({ identity: 'header:x-api-key', idSecret: 'secret-two' })(req).id;
    const plain = createIdentifier({ identity: 'header:x-api-key' })(req).id;
    assert.notEqual(one, two);
    assert.notEqual(one, plain);
  });

  it('reads a JWT claim from the bearer token (decoded, not verified)', () => {
    const identify = createIdentifier({ identity: 'jwt:sub' });
    const alice = identify(fakeRequest({ authorization: jwt({ sub: 'alice' }) }));
    const alice2 = identify(fakeRequest({ authorization: jwt({ sub: 'alice', iat: 5 }) }));
    const bob = identify(fakeRequest({ authorization: jwt({ sub: 'bob' }) }));
    assert.equal(alice.id, alice2.id);
    assert.notEqual(alice.id, bob.id);
    for (const authorization of ['Bearer not-a-jwt', jwt({ other: 'x' }), 'Bearer a.!!!.c', `Bearer x.${Buffer.from('[1]').toString('base64url')}.y`]) {
      assert.equal(identify(fakeRequest({ authorization })).anonymous, true, authorization);
    }
  });

  it('uses the peer address and ignores X-Forwarded-For from an untrusted peer (a spoofed header changes nothing)', () => {
    const identify = createIdentifier({ identity: 'ip', trustProxy: ['10.0.0.0/8'] });
    const plain = identify(fakeRequest({}, '203.0.113.9'));
    const spoofed = identify(fakeRequest({ 'x-forwarded-for': '1.2.3.4' }, '203.0.113.9'));
    const spoofed2 = identify(fakeRequest({ 'x-forwarded-for': '5.6.7.8' }, '::ffff:203.0.113.9'));
    assert.equal(plain.id, spoofed.id);
    assert.equal(plain.id, spoofed2.id);
  });

  it('behind trusted proxies takes the right-most untrusted X-Forwarded-For hop', () => {
    const identify = createIdentifier({ identity: 'ip', trustProxy: ['10.0.0.0/8', '192.168.1.1'] });
    const direct = identify(fakeRequest({}, '198.51.100.7'));
    // The client claims 1.2.3.4; its real address 198.51.100.7 was appended by the trusted proxies.
    const viaTwo = identify(fakeRequest({ 'x-forwarded-for': '1.2.3.4, 198.51.100.7, 10.1.2.3' }, '192.168.1.1'));
    const viaOne = identify(fakeRequest({ 'x-forwarded-for': '9.9.9.9, 198.51.100.7' }, '10.0.0.5'));
    const claim = identify(fakeRequest({}, '1.2.3.4'));
    assert.equal(viaTwo.id, direct.id);
    assert.equal(viaOne.id, direct.id);
    assert.notEqual(viaTwo.id, claim.id);
    // A trusted peer without the header is the client itself.
    assert.equal(identify(fakeRequest({}, '10.0.0.5')).id, createIdentifier({ identity: 'ip' })(fakeRequest({}, '10.0.0.5')).id);
  });

  it('reads an X-Forwarded-For hop with a port or brackets as its address: one client, one id, whatever its source port', () => {
    const identify = createIdentifier({ identity: 'ip', trustProxy: ['10.0.0.0/8'] });
    const direct = identify(fakeRequest({}, '203.0.113.7'));
    const viaPort1 = identify(fakeRequest({ 'x-forwarded-for': '203.0.113.7:50123' }, '10.0.0.1'));
    const viaPort2 = identify(fakeRequest({ 'x-forwarded-for': '203.0.113.7:50124' }, '10.0.0.1'));
    assert.equal(viaPort1.id, viaPort2.id);
    assert.equal(viaPort1.id, direct.id);
    const v6 = identify(fakeRequest({}, '2001:db8::1'));
    for (const hop of ['[2001:db8::1]:443', '[2001:db8::1]:50000', '[2001:db8::1]'])
      assert.equal(identify(fakeRequest({ 'x-forwarded-for': hop }, '10.0.0.1')).id, v6.id, hop);
    // The trusted proxies' own hops may carry ports too: still trusted, so the client is the hop left of them.
    for (const proxyHop of ['10.1.2.3:8080', '[::ffff:10.1.2.3]:8080'])
      assert.equal(identify(fakeRequest({ 'x-forwarded-for': `1.2.3.4, 203.0.113.7:50123, ${proxyHop}` }, '10.0.0.1')).id, direct.id, proxyHop);
  });

  it('reads an IPv4-mapped address in any spelling as its IPv4 address', () => {
    const identify = createIdentifier({ identity: 'ip', trustProxy: ['10.0.0.0/8'] });
    const direct = identify(fakeRequest({}, '203.0.113.7'));
    for (const hop of ['::ffff:203.0.113.7', '0:0:0:0:0:ffff:203.0.113.7', '::ffff:cb00:7107', '::FFFF:CB00:7107', '[::ffff:cb00:7107]:443'])
      assert.equal(identify(fakeRequest({ 'x-forwarded-for': hop }, '10.0.0.1')).id, direct.id, hop);
    // Not mapped: IPv6 addresses that merely contain ffff stay IPv6.
    assert.notEqual(identify(fakeRequest({ 'x-forwarded-for': '2001:db8::ffff:cb00:7107' }, '10.0.0.1')).id, direct.id);
  });

  it('takes a function, and treats no identity as the anonymous class', () => {
    const identify = createIdentifier({ identity: (req) => req.headers['x-tenant'] as string | undefined });
    assert.equal(identify(fakeRequest({})).anonymous, true);
    assert.equal(identify(fakeRequest({})).id, 'anonymous');
    assert.equal(identify(fakeRequest({ 'x-tenant': 't1' })).anonymous, false);
    assert.equal(createIdentifier({ identity: 'header:x-api-key' })(fakeRequest({})).anonymous, true);
  });

  it('rejects bad specs with what to write instead', () => {
    assert.throws(
      () => createIdentifier({ identity: 'cookie:sid' }),
      (e: Error) => e instanceof ServingOptionError && /header:NAME/.test(e.message),
    );
    assert.throws(() => createIdentifier({ identity: 'ip', trustProxy: ['10.0.0.0/99'] }), ServingOptionError);
    assert.throws(() => createIdentifier({ identity: 'ip', trustProxy: ['not-an-ip'] }), /CIDR/);
    assert.throws(() => createIdentifier({ identity: 'header:x-api-key', trustProxy: ['10.0.0.0/8'] }), /identity "ip"/);
  });

  it('names the field, what was given and what to write; unknown keys get the allowed list', () => {
    const refused = (config: unknown, message: RegExp) =>
      assert.throws(
        () => createIdentifier(config as never),
        (e: Error) => e instanceof ServingOptionError && message.test(e.message),
        `expected ${message}`,
      );
    refused({ identity: 'cookie:sid' }, /^clients\.identity must be "header:NAME" .*, got "cookie:sid"$/);
    refused({ identity: 42 }, /^clients\.identity must be .* or a function \(req\) => id, got 42$/);
    refused({ identity: 'ip', trustProxy: ['10.0.0.0/8', '10.0.0.0/33'] }, /^clients\.trustProxy\[1\] must be an address or CIDR, .*, got "10\.0\.0\.0\/33"$/);
    refused({ identity: 'ip', trustProxy: ['10.0.0.0/'] }, /^clients\.trustProxy\[0\] must be an address or CIDR/);
    refused({ identity: 'ip', trustProxy: '10.0.0.0/8' }, /^clients\.trustProxy must be a list of CIDRs or addresses, .*, got "10\.0\.0\.0\/8"$/);
    refused({ identity: 'ip', idSecret: 7 }, /^clients\.idSecret must be a string .*, got 7$/);
    refused({ identity: 'ip', trustedProxies: [] }, /^clients: unknown option\(s\) trustedProxies; allowed: identity, trustProxy, idSecret$/);
    assert.equal(createIdentifier({ identity: 'ip', trustProxy: ['::1/128', '192.168.1.1'] })(fakeRequest({})).anonymous, false);
  });
});
