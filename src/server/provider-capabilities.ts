/**
 * What a context provider is known not to give, marked by whoever built it (surrogateContext over a
 * forward-only surrogate) and read by the middleware's option check, so a defense it cannot serve is
 * refused when the middleware is built, not on the first request. No models import: the proxy loads
 * TensorFlow.js only when it needs a surrogate.
 */
import type { ContextProvider } from './perturber.js';

const LACKS_GRAM = Symbol('providerLacksGram');

/** Marks `provider` as giving no Gram matrices, with the message that says what to use instead. */
export function markLacksGram(provider: ContextProvider, message: string): void {
  Object.defineProperty(provider, LACKS_GRAM, { value: message });
}

/** The reason `provider` gives no Gram matrices, or undefined when it may. */
export function lacksGram(provider: ContextProvider | undefined): string | undefined {
  return (provider as { [LACKS_GRAM]?: string } | undefined)?.[LACKS_GRAM];
}
