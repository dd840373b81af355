/** Errors of the models layer. Each names the file, layer or input it is about. */

export class ModelError extends Error {
  override name = 'ModelError';
}

/** A model directory that cannot be read: missing, unreadable or corrupt file (named in `file`). */
export class ModelFileError extends ModelError {
  override name = 'ModelFileError';
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}

/** A model whose layers a computation does not support (names the layer). */
export class UnsupportedModelError extends ModelError {
  override name = 'UnsupportedModelError';
}

/** Inputs that do not fit the model (absent, wrong length, not finite): the caller's fault, 4xx material. */
export class ModelInputError extends ModelError {
  override name = 'ModelInputError';
}

/** A defense needs context that nothing was configured to provide (no surrogate, no misinformation model): a configuration error. */
export class MissingProviderError extends ModelError {
  override name = 'MissingProviderError';
}

/** No TensorFlow.js backend could be started, or a forced one is unavailable. */
export class BackendError extends ModelError {
  override name = 'BackendError';
}

/** A surrogate's worker thread is gone (it crashed, exited or was disposed): its calls fail, so a defense fails closed. */
export class SurrogateThreadError extends ModelError {
  override name = 'SurrogateThreadError';
}
