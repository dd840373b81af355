/** The proxy's own options, checked by their schema before the serving layer builds anything. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ServingOptionError } from '../../../src/server/errors.js';
import { SERVING_OPTION_NAMES } from '../../../src/server/options.js';
import { PROXY_OPTION_NAMES, resolveProxyOptions } from '../../../src/server/proxy/options.js';

const base = { upstream: 'http://127.0.0.1:8080/base/', defense: 'rounding:decimals=2' };
const refused = (options: object, message: RegExp) =>
  assert.throws(
    () => resolveProxyOptions(options as never),
    (e: unknown) => e instanceof ServingOptionError && message.test((e as Error).message),
    `expected ${message}`,
  );

describe('the proxy options', () => {
  it('fills the defaults and keeps the upstream path prefix', () => {
    const resolved = resolveProxyOptions(base);
    assert.equal(resolved.upstream.href, 'http://127.0.0.1:8080/base/');
    assert.equal(resolved.basePath, '/base');
    assert.deepEqual(
      [resolved.timeoutMs, resolved.maxBodyBytes, resolved.maxAnswerBytes, resolved.metricsPath, resolved.livePath, resolved.readyPath],
      [30_000, 10 * 1024 * 1024, 64 * 1024 * 1024, '/metrics', '/healthz', '/readyz'],
    );
    assert.equal(resolved.upstreamHealthPath, '/v2/health/ready', 'kserve-v2 has a readiness route');
    assert.equal(resolveProxyOptions({ ...base, metricsPath: false, livePath: false }).metricsPath, false);
  });

  it('names the option, what was given and what to write', () => {
    refused({ ...base, upstream: 'not a url' }, /^upstream must be a URL such as "http:\/\/127\.0\.0\.1:8080", got "not a url"$/);
    refused({ ...base, upstream: 'ftp://x' }, /^upstream must be an http:\/\/ or https:\/\/ URL, got "ftp:\/\/x"$/);
    refused({ ...base, upstream: 'http://x/?key=1' }, /^upstream must not carry a query or a fragment/);
    refused({ defense: 'rounding' }, /^upstream is required/);
    refused({ ...base, timeoutMs: 1.5 }, /^timeoutMs must be a positive integer, got 1\.5$/);
    refused({ ...base, maxBodyBytes: '10' }, /^maxBodyBytes must be a positive integer, got "10"$/);
    refused({ ...base, livePath: 'healthz' }, /^livePath must be a path such as "\/healthz", or false, got "healthz"$/);
    refused({ ...base, metricsPath: true }, /^metricsPath must be a path such as "\/metrics", or false, got true$/);
    refused({ ...base, upstreamHealthPath: 'ready' }, /^upstreamHealthPath must be a path such as "\/v2\/health\/ready", got "ready"$/);
    refused({ ...base, inferRoutes: 'POST /predict' }, /^inferRoutes must be a list of routes such as \["POST \/predict"\], got "POST \/predict"$/);
    refused({ ...base, passUnknownRoutes: 'yes' }, /^passUnknownRoutes must be true or false, got "yes"$/);
    refused({ ...base, metricsText: 'text' }, /^metricsText must be a function/);
  });

  it('refuses unknown options, listing its own and the serving options', () => {
    for (const name of SERVING_OPTION_NAMES) assert.ok(PROXY_OPTION_NAMES.includes(name), name);
    refused({ ...base, upsteam: 'x' }, new RegExp(`^unknown option upsteam; allowed: upstream, timeoutMs, .*, ${SERVING_OPTION_NAMES.join(', ')}$`));
    refused({ ...base, a: 1, b: 2 }, /^unknown options a, b; allowed: /);
  });

  it('checks its own options before the serving options', () => {
    // A bad defense and a bad proxy option: the proxy's is reported, before any serving part is built.
    refused({ ...base, defense: 'nope', timeoutMs: 0 }, /^timeoutMs must be a positive integer, got 0$/);
    refused({ ...base, defense: 'nope' }, /^defense: unknown defense "nope"/);
  });
});
