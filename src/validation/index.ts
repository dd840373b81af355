/**
 * Validation, one library for every option object, config file, grid and flag set: zod schemas from
 * which the allowed keys, the error messages (in each layer's own error class) and the proxy config
 * file's JSON Schema all come. The bottom of the layering: any layer may import it. Re-exports only.
 */
export {
  describeIssue,
  joinPath,
  keysAt,
  keysOf,
  optionStyle,
  parseOptions,
  SENTENCE,
  shown,
  type ErrorClass,
  type FieldPath,
  type OptionStyle,
} from './parse.js';
export {
  boundsText,
  callable,
  fromText,
  integerAtLeast,
  nonEmptyText,
  numberIn,
  numberText,
  numericText,
  oneOf,
  oneOfList,
  positiveInteger,
  positiveNumber,
  secretText,
  share,
  trueOrFalse,
  type NumberBounds,
} from './fields.js';
