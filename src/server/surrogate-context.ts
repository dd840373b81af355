/**
 * The bridge from the serving layer to the models layer: a ContextProvider that computes what a
 * defense needs (surrogate softmax, Gram matrices, misinformation softmax, input keys) from the
 * request's inputs with the models layer's computeDefenseContextAsync, so any SurrogateModel (a
 * TF.js model of any topology, a GraphModel, ONNX) serves without blocking the event loop. Inputs
 * the models layer rejects (wrong width, absent) are the client's fault: 400.
 */
import type { ContextNeed } from '../defenses/index.js';
import {
  computeDefenseContextAsync,
  initBackend,
  loadSurrogate,
  ModelInputError,
  nonDifferentiableMessage,
  type ContextProviders,
  type LoadSurrogateOptions,
  type SurrogateModel,
} from '../models/index.js';
import { RequestFormatError, ServingOptionError } from './errors.js';
import type { ContextProvider } from './perturber.js';
import { markLacksGram } from './provider-capabilities.js';

export interface SurrogateContextOptions {
  /** The defense's needs: checked once, here, against the surrogate (a forward-only one cannot give Gram matrices). */
  needs?: readonly ContextNeed[];
}

/**
 * Throws ServingOptionError when `needs` asks for Gram matrices (mad with jacobian=full) and the
 * surrogate is forward-only (ONNX, GraphModel), saying what to write instead.
 */
export function checkSurrogateForNeeds(needs: readonly ContextNeed[], surrogate: Pick<SurrogateModel, 'differentiable'> | undefined): void {
  if (surrogate && needs.includes('surrogateGram') && !surrogate.differentiable) throw new ServingOptionError(nonDifferentiableMessage());
}

export function surrogateContext(providers: ContextProviders, options: SurrogateContextOptions = {}): ContextProvider {
  if (options.needs) checkSurrogateForNeeds(options.needs, providers.surrogate);
  const provider: ContextProvider = async (needs, inputs) => {
    try {
      return await computeDefenseContextAsync(needs, inputs.data, inputs.rows, providers);
    } catch (error) {
      if (error instanceof ModelInputError) throw new RequestFormatError(`request: ${error.message}`);
      throw error;
    }
  };
  // The middleware refuses jacobian=full over this provider when it is built (see options.ts).
  if (providers.surrogate && !providers.surrogate.differentiable) markLacksGram(provider, nonDifferentiableMessage());
  return provider;
}

/**
 * Starts the tfjs backend and loads a surrogate (a model directory, an ONNX file, a model object;
 * optionally re-initialised with a seed) as a context provider for a defense with `needs`.
 */
export async function loadSurrogateContext(source: string | LoadSurrogateOptions, options: SurrogateContextOptions = {}): Promise<ContextProvider> {
  await initBackend();
  const surrogate = await loadSurrogate(typeof source === 'string' ? { dir: source } : source);
  try {
    return surrogateContext({ surrogate }, options);
  } catch (error) {
    surrogate.dispose();
    throw error;
  }
}
