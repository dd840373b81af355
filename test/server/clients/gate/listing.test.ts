/** The admin listing reads a bounded number of states, and still shows the most suspicious clients first. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseDefense } from '../../../../src/defenses/index.js';
import type { ClientAction } from '../../../../src/detection/types.js';
import { createClientGate } from '../../../../src/server/clients/gate.js';
import { SEVERITY } from '../../../../src/server/clients/gate/actions.js';
import type { GateContext } from '../../../../src/server/clients/gate/context.js';
import { LISTING_READ_FACTOR, MAX_LISTED, overview, suspicious } from '../../../../src/server/clients/gate/listing.js';
import { createMemoryStore } from '../../../../src/server/clients/store-memory.js';
import { createRedisStore } from '../../../../src/server/clients/store-redis.js';
import type { ClientStore } from '../../../../src/server/clients/store.js';
import { ServingOptionError } from '../../../../src/server/errors.js';
import { createServingMetrics } from '../../../../src/server/metrics.js';
import { countDetection } from '../../helpers/count-detection.js';
import { startRedis, type TestRedis } from '../../helpers/redis-server.js';

// Escalated from 5 queries, throttled from 10, refused from 20; the score is the query count.
const detection = countDetection({ escalateAt: 5, throttleAt: 10, refuseAt: 20, tier: 'argmax' });
const actionOf = (queries: number): ClientAction => (queries >= 20 ? 'refuse' : queries >= 10 ? 'throttle' : queries >= 5 ? 'escalate' : 'default');

/** Writes a client as the gate does: its state, ranked by its action's severity. */
const write = (store: ClientStore, id: string, queries: number) =>
  store.update(id, () => ({ state: { queries, action: actionOf(queries) }, result: undefined, rank: SEVERITY[actionOf(queries)] }));

/** The listing's view of `store`, every limit it asks the store for recorded. */
function listingOver(store: ClientStore) {
  const reads: number[] = [];
  const spied: ClientStore = {
    ...store,
    list: (limit) => {
      reads.push(limit);
      return store.list(limit);
    },
  };
  const ctx = {
    detection,
    now: () => 1_000,
    above: undefined,
    stores: { use: async (_ticket: unknown, _operation: string, run: (s: ClientStore) => Promise<unknown>) => ({ value: await run(spied), degraded: false }) },
  } as unknown as GateContext;
  return { ctx, reads };
}

/**
 * Flagged clients written first (the oldest), then a flood of clean ones: the flagged must still
 * lead a listing that reads a few times `limit` states, not the whole store.
 */
async function checkBoundedListing(store: ClientStore): Promise<void> {
  await write(store, 'escalated-6', 6);
  await write(store, 'refused-25', 25);
  await write(store, 'throttled-12', 12);
  await write(store, 'escalated-8', 8);
  await write(store, 'refused-21', 21);
  for (let i = 0; i < 1500; i++) await write(store, `clean-${i}`, i % 5);
  const { ctx, reads } = listingOver(store);

  const listed = await suspicious(ctx, 10);
  assert.deepEqual(
    listed.slice(0, 5).map((c) => c.id),
    ['refused-25', 'refused-21', 'throttled-12', 'escalated-8', 'escalated-6'],
    'the most severe action first, the highest score first within it',
  );
  assert.equal(listed.length, 10);
  assert.ok(
    listed.slice(5).every((c) => c.action === 'default' && c.score === 4),
    'then the clean clients with the highest score among those read',
  );
  assert.deepEqual(reads, [10 * LISTING_READ_FACTOR], 'reads a few times the clients shown, not the whole store');

  const admin = await overview(ctx, 50);
  assert.equal(admin.clients[0].id, 'refused-25');
  assert.ok(reads[1] <= 50 * LISTING_READ_FACTOR, `the admin overview read ${reads[1]} states to show 50`);

  await suspicious(ctx, 1_000_000);
  assert.ok(reads[2] <= MAX_LISTED * LISTING_READ_FACTOR, `a huge limit read ${reads[2]} states`);
}

describe('the admin listing', () => {
  it('memory store: reads a bounded number of states, the most suspicious first', async () => {
    await checkBoundedListing(createMemoryStore({ now: () => 1_000 }));
  });

  describe('redis store (real redis-server)', () => {
    let redis: TestRedis;
    before(async () => {
      redis = await startRedis();
    });
    after(() => redis?.stop());

    it('reads a bounded number of states, the most suspicious first', async (t) => {
      const store = await createRedisStore({ redis: redis.url, keyPrefix: 'listing:' });
      t.after(() => store.close());
      await store.ready();
      await checkBoundedListing(store);
    });
  });

  it('refuses an admin limit past what one listing shows, at construction, with what to write instead', () => {
    const argmax = parseDefense('argmax');
    assert.throws(
      () =>
        createClientGate(
          { identity: 'header:x-api-key', detection, admin: { token: 'admin-token-0123456789', limit: MAX_LISTED + 1 } },
          { defense: argmax, tiers: new Map([['argmax', argmax]]), metrics: createServingMetrics() },
        ),
      (e: Error) => e instanceof ServingOptionError && e.message.includes(`write a limit of ${MAX_LISTED} or less`),
    );
  });
});
