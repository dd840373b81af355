/** The MAD context of the server benchmarks: a random, untrained MLP surrogate (784-256-128-K), as in the paper. */
import { initBackend, Surrogate } from '../../src/models/index.js';
import { pixelsInUnitRange } from '../../src/demo/pixels.js';
import type { ContextProvider } from '../../src/server/perturber.js';
import { surrogateContext } from '../../src/server/surrogate-context.js';

export async function benchContext(classes: number): Promise<ContextProvider> {
  await initBackend({ log: () => {} });
  const provider = surrogateContext({ surrogate: Surrogate.random({ arch: 'mlp', inputShape: [784], classes, seed: 2 }) });
  return (needs, inputs) => provider(needs, pixelsInUnitRange(inputs));
}
