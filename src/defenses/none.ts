/** The identity: answers pass unchanged. The baseline of every comparison. */
import { defineDefense } from './spec/definition.js';

export const none = defineDefense({
  name: 'none',
  summary: 'no defense: the probabilities pass unchanged (baseline)',
  params: {},
  create: () => ({
    needs: [],
    keepsTop1: true,
    onSimplex: true,
    run(input, out) {
      out.set(input.data);
    },
  }),
});
