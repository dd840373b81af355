/** The random policy: the pool in a seeded random order, without replacement. */
import { permutation, seededRandom } from '../random.js';
import type { AttackerPool, QueryPolicy } from './types.js';

export function randomPolicy(pool: Pick<AttackerPool, 'rows'>, seed: number): QueryPolicy {
  // A fixed order per seed: a smaller budget queries a prefix of a larger one's images.
  const order = permutation(pool.rows, seededRandom(seed));
  let cursor = 0;
  return {
    next(max) {
      const take = Math.max(0, Math.min(max, order.length - cursor));
      const picked = order.slice(cursor, cursor + take);
      cursor += take;
      return picked;
    },
    async observe() {},
  };
}
