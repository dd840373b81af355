import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { scratchDir } from '../helpers/scratch.js';
import { waitFor, within } from '../helpers/wait.js';
import { kserveRequest } from '../server/helpers/fixtures.js';
import { SLOW_ANSWER_MS, startStubUpstream, type StubUpstream } from '../server/helpers/stub-upstream.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const PATH = '/v2/models/mnist/infer';

/** A request on a fresh connection each time, so the cluster spreads them over its workers. */
const METRICS_TOKEN = 'cluster-metrics-token-1234';

function send(url: string, path: string, headers: http.OutgoingHttpHeaders = {}, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}${path}`,
      { method: body === undefined ? 'GET' : 'POST', agent: false, headers: { 'content-type': 'application/json', ...headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

describe('msd proxy --workers 2 --config FILE', { timeout: 120_000 }, () => {
  let upstream: StubUpstream;
  let url: string;
  let stderr = '';
  let exited: Promise<number | null>;
  let child: ReturnType<typeof spawn>;
  let config: string;

  before(async () => {
    // Recorded: the SIGTERM test waits for its slow request to reach the upstream.
    upstream = await startStubUpstream('kserve-v2');
    const dir = await scratchDir('msd-proxy-cluster-');
    config = join(dir, 'proxy.yaml');
    await writeFile(
      config,
      `upstream: ${upstream.url}\ndefense: argmax\nworkers: 2\nport: 8\nlogLevel: warn\ntimeoutMs: ${SLOW_ANSWER_MS * 2}\nshutdownTimeoutMs: ${SLOW_ANSWER_MS * 3}\nmetricsTokenEnv: MSD_TEST_METRICS_TOKEN\n`,
    );
    // --port overrides the file's (privileged) port 8.
    child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'proxy', '--config', config, '--port', '0'], {
      cwd: root,
      env: { ...process.env, MSD_TEST_METRICS_TOKEN: METRICS_TOKEN },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    exited = new Promise((resolve) => child.once('exit', resolve));
    url = await new Promise<string>((resolve, reject) => {
      child.stderr!.on('data', (c: Buffer) => {
        stderr += c;
        const match = /proxy: (http:\/\/127\.0\.0\.1:\d+) .* 2 workers/.exec(stderr);
        if (match) resolve(match[1]);
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
  });

  after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await upstream.close();
  });

  it('answers through every worker and aggregates their metrics on /metrics', async () => {
    const answers = await Promise.all(Array.from({ length: 6 }, () => send(url, PATH, {}, JSON.stringify(kserveRequest()))));
    for (const answer of answers) assert.deepEqual(JSON.parse(answer.body).outputs[0].data, [1, 0, 0, 0, 1, 0]);
    // Each request lands on one worker (round robin); the sum is only 6 when /metrics adds up both.
    for (let i = 0; i < 3; i += 1) {
      const metrics = await send(url, '/metrics', { authorization: `Bearer ${METRICS_TOKEN}` });
      assert.match(metrics.body, /msd_requests_total\{defense="argmax",outcome="defended"\} 6\n/);
      assert.match(metrics.body, /msd_perturbed_rows_total\{defense="argmax"\} 12\n/);
    }
    assert.equal((await send(url, '/readyz')).status, 200);
  });

  it('replaces every worker on SIGHUP, one at a time, answering all along, and logs the new settings', async () => {
    const marker = stderr.length;
    // A new defense that answers these rows as argmax does, so the tests after this one see the same numbers.
    await writeFile(config, (await readFile(config, 'utf8')).replace('defense: argmax', "defense: 'topk:k=1,renormalize=true'"));
    child.kill('SIGHUP');
    let answered = 0;
    let refused = 0;
    const started = Date.now();
    while (!stderr.slice(marker).includes('every worker replaced')) {
      assert.ok(Date.now() - started < 60_000, `the rolling restart did not finish: ${stderr.slice(marker)}`);
      let answer = await send(url, PATH, {}, JSON.stringify(kserveRequest()));
      // A connection handed to a worker just as it drains gets 503; a client retries it elsewhere.
      if (answer.status === 503) {
        refused += 1;
        answer = await send(url, PATH, {}, JSON.stringify(kserveRequest()));
      }
      assert.equal(answer.status, 200, answer.body);
      answered += 1;
      assert.ok(!/stopped/.test(stderr.slice(marker)), stderr);
    }
    assert.ok(answered > 0);
    assert.ok(refused <= 2, `${refused} requests refused during the restart`);
    assert.match(stderr.slice(marker), /every worker replaced; serving defense topk:k=1,renormalize=true, .* \(was defense argmax, /);
    assert.equal((await send(url, PATH, {}, JSON.stringify(kserveRequest()))).status, 200);
  });

  it('drains on SIGTERM: the request in flight finishes, then every process exits 0', async () => {
    const seen = upstream.requests.length;
    const inFlight = send(url, PATH, { 'x-stub-mode': 'slow' }, JSON.stringify(kserveRequest()));
    // In flight: a worker has forwarded it, and the upstream holds it for SLOW_ANSWER_MS.
    await waitFor(() => upstream.requests.slice(seen).some((r) => r.headers['x-stub-mode'] === 'slow'), {
      what: 'the upstream to receive the slow request',
      // Through the master and a worker that may have just been replaced: on a busy machine, more than the answer's own time.
      timeoutMs: SLOW_ANSWER_MS * 2,
      detail: () => stderr,
    });
    child.kill('SIGTERM');
    const answer = await within(inFlight, { what: 'the answer to the request in flight', timeoutMs: SLOW_ANSWER_MS * 3, detail: () => stderr });
    assert.equal(answer.status, 200, answer.body);
    assert.deepEqual(JSON.parse(answer.body).outputs[0].data, [1, 0, 0, 0, 1, 0]);
    assert.equal(await within(exited, { what: 'the cluster to exit after SIGTERM', timeoutMs: SLOW_ANSWER_MS * 5, detail: () => stderr }), 0, stderr);
    assert.match(stderr, /SIGTERM: draining 2 workers/);
  });
});

describe('msd proxy --workers 3 with a noise defense and no secret', { timeout: 120_000 }, () => {
  let upstream: StubUpstream;
  let child: ReturnType<typeof spawn>;
  before(async () => {
    upstream = await startStubUpstream('kserve-v2');
  });
  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await upstream.close();
  });

  it('answers the same input with the same noise from every worker (one secret drawn for all)', async () => {
    const env = { ...process.env };
    delete env.MSD_NOISE_SECRET;
    child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'src/cli/main.ts',
        'proxy',
        '-u',
        upstream.url,
        '--defense',
        'noise:scale=0.5',
        '--workers',
        '3',
        '--port',
        '0',
        '--log-level',
        'warn',
      ],
      { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    const url = await within(
      new Promise<string>((resolve, reject) => {
        child.stderr!.on('data', (c: Buffer) => {
          stderr += c;
          const match = /proxy: (http:\/\/127\.0\.0\.1:\d+) .* 3 workers/.exec(stderr);
          if (match) resolve(match[1]);
        });
        child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
      }),
      { what: 'the cluster to listen', timeoutMs: 60_000, detail: () => stderr },
    );
    // Fresh connections: the requests are spread over the three workers.
    const answers = await Promise.all(Array.from({ length: 9 }, () => send(url, PATH, {}, JSON.stringify(kserveRequest()))));
    const bodies = new Set(answers.map((a) => JSON.stringify(JSON.parse(a.body).outputs[0].data)));
    assert.equal(bodies.size, 1, [...bodies].join('\n'));
    assert.notDeepEqual(JSON.parse([...bodies][0]), [0.71, 0.2, 0.09, 0.14, 0.64, 0.22], 'noised');
  });
});
