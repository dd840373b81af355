/** Errors of the defense layer. The serving layer maps them to 4xx; anything else is a 5xx. */

export class DefenseError extends Error {
  override name = 'DefenseError';
}

/** A probability batch that is not what the defense accepts (names the row and the problem). */
export class InvalidBatchError extends DefenseError {
  override name = 'InvalidBatchError';
  constructor(
    message: string,
    readonly row?: number,
  ) {
    super(row === undefined ? message : `row ${row}: ${message}`);
  }
}

/** A defense was applied without the context it declared it needs. */
export class MissingContextError extends DefenseError {
  override name = 'MissingContextError';
}

/** A spec string or config object that does not describe a valid defense. */
export class DefenseSpecError extends DefenseError {
  override name = 'DefenseSpecError';
}
