/**
 * The bridge from the serving layer to the models layer: a ContextProvider that computes what a
 * defense needs (surrogate softmax, Gram matrices, misinformation softmax, input keys) from the
 * request's inputs with the models layer's computeDefenseContext. Inputs the models layer rejects
 * (wrong width, absent) are the client's fault: 400.
 */
import { computeDefenseContext, initBackend, ModelInputError, Surrogate, type ContextProviders } from '../models/index.js';
import { RequestFormatError } from './errors.js';
import type { ContextProvider } from './perturber.js';

export function surrogateContext(providers: ContextProviders): ContextProvider {
  return (needs, inputs) => {
    try {
      return computeDefenseContext(needs, inputs.data, inputs.rows, providers);
    } catch (error) {
      if (error instanceof ModelInputError) throw new RequestFormatError(`request: ${error.message}`);
      throw error;
    }
  };
}

/** Starts the tfjs backend and loads a saved surrogate model (a model directory) as a context provider. */
export async function loadSurrogateContext(dir: string): Promise<ContextProvider> {
  await initBackend();
  return surrogateContext({ surrogate: await Surrogate.load(dir) });
}
